"""Shared machinery for turning PyTorch checkpoints into fc_jax parameter trees.

A converter is a declarative list of `Rule`s, each mapping one source tensor (or one per layer, stacked on a
leading `layers` axis) to one leaf of our parameter tree through a layout transform. `convert` walks the rules
tensor by tensor, filling one preallocated numpy array per leaf, so a 5B checkpoint never exists twice in memory.
Every source key must be used and every leaf filled; otherwise `CheckpointError` lists what is missing,
unexpected and mis-shaped.

Readers never unpickle: safetensors files (single, sharded with an index JSON, or a folder of them) are read
with `safetensors`, and `.pth` files with `torch.load(weights_only=True, mmap=True)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

Array = np.ndarray
Transform = Callable[[Array], Array]


class CheckpointError(ValueError):
    """A checkpoint does not match the parameter tree it is converted into."""


# ----------------------------------------------------------------------------------------------------------------
# Layout transforms (PyTorch layout -> channels-last fc_jax layout).


def identity(x: Array) -> Array:
    return x


def linear(x: Array) -> Array:
    """nn.Linear weight [out, in] -> Dense kernel [in, out]."""
    return np.ascontiguousarray(x.T)


def conv(x: Array) -> Array:
    """ConvNd weight [out, in, *k] -> flax kernel [*k, in, out] (any number of spatial dims)."""
    nd = x.ndim - 2
    return np.ascontiguousarray(np.transpose(x, tuple(range(2, 2 + nd)) + (1, 0)))


def reshape(shape: Sequence[int]) -> Transform:
    """Reshape to `shape` (e.g. drop the singleton dims of a broadcast scale)."""
    return lambda x: np.reshape(x, tuple(shape))


# ----------------------------------------------------------------------------------------------------------------
# Readers.


class TensorReader:
    """Lazy, key-by-key access to the tensors of one checkpoint."""

    def __init__(self, loaders: Mapping[str, Callable[[], Any]], shapes: Mapping[str, tuple], origin: str):
        self._loaders = dict(loaders)
        self._shapes = dict(shapes)
        self.origin = origin

    def keys(self) -> list[str]:
        return sorted(self._loaders)

    def shape(self, key: str) -> tuple:
        return self._shapes[key]

    def get(self, key: str) -> Array:
        """The tensor as a numpy array; bfloat16 and other float types are widened to float32."""
        return _to_numpy(self._loaders[key]())

    def __contains__(self, key: str) -> bool:
        return key in self._loaders

    def __len__(self) -> int:
        return len(self._loaders)


def _to_numpy(t: Any) -> Array:
    if isinstance(t, np.ndarray):
        arr = t
    else:  # a torch tensor
        import torch

        if t.dtype in (torch.bfloat16, torch.float16, torch.float64):
            t = t.to(torch.float32)
        arr = t.detach().cpu().numpy()
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _safetensors_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    index = [f for f in os.listdir(path) if f.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(path, index[0])) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
        if missing:
            raise CheckpointError(f"{path}: the index {index[0]} names shards that are not there: {missing}")
        return [os.path.join(path, f) for f in files]
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    return [os.path.join(path, f) for f in files]


def _open_safetensors(files: list[str], origin: str) -> TensorReader:
    from safetensors import safe_open

    loaders, shapes = {}, {}
    for file in files:
        handle = safe_open(file, framework="np")
        for key in handle.keys():
            if key in loaders:
                raise CheckpointError(f"{origin}: tensor {key!r} appears in more than one shard")
            shapes[key] = tuple(handle.get_slice(key).get_shape())
            loaders[key] = _bf16_safe_loader(file, key)
    return TensorReader(loaders, shapes, origin)


def _bf16_safe_loader(file: str, key: str) -> Callable[[], Any]:
    """numpy has no bfloat16: read such tensors through torch if present, else decode the raw bits."""

    def load():
        from safetensors import safe_open

        with safe_open(file, framework="np") as handle:
            try:
                return handle.get_tensor(key)
            except (TypeError, ValueError):
                pass
        return _read_bf16_raw(file, key)

    return load


def _read_bf16_raw(file: str, key: str) -> Array:
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
        info = header[key]
        if info["dtype"] != "BF16":
            raise CheckpointError(f"{file}: tensor {key!r} has dtype {info['dtype']}, which cannot be read")
        start, end = info["data_offsets"]
        f.seek(8 + header_len + start)
        raw = np.frombuffer(f.read(end - start), dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _open_torch(path: str) -> TensorReader:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            f"{path} is a PyTorch .pth file; reading it needs torch (pip install 'fc_jax[test]' or torch)"
        ) from e
    try:  # mmap avoids a second copy of large files; legacy (non-zip) files only load without it
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: could not be read as a weights-only PyTorch checkpoint: {e}") from e
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    loaders = {k: (lambda v=v: v) for k, v in state.items() if hasattr(v, "shape")}
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    return TensorReader(loaders, shapes, path)


def open_tensors(path: str) -> TensorReader:
    """Open a checkpoint: a `.safetensors` file, a folder of them (sharded with an index JSON or not), or a
    `.pth`/`.pt`/`.bin` PyTorch file (weights only)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        files = _safetensors_files(path)
        if not files:
            pth = sorted(f for f in os.listdir(path) if f.endswith((".pth", ".pt", ".bin")))
            if len(pth) == 1:
                return _open_torch(os.path.join(path, pth[0]))
            raise CheckpointError(f"{path}: no .safetensors files (or a single .pth) found in this folder")
        return _open_safetensors(files, path)
    if path.endswith(".safetensors"):
        return _open_safetensors([path], path)
    if path.endswith((".pth", ".pt", ".bin")):
        return _open_torch(path)
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, a folder of them, or .pth)")


# ----------------------------------------------------------------------------------------------------------------
# Declarative key maps.


@dataclasses.dataclass(frozen=True)
class Rule:
    """One leaf of the target tree filled from one source tensor.

    `source` may contain `{i}`: then the leaf is stacked over `layers` source tensors (i = 0..layers-1) on a
    leading axis, as `nn.scan` lays its parameters out.
    """

    target: tuple[str, ...]
    source: str
    transform: Transform = identity
    layers: int | None = None

    def sources(self) -> list[str]:
        if self.layers is None:
            return [self.source]
        return [self.source.format(i=i) for i in range(self.layers)]


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[tuple, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def convert(
    reader: TensorReader,
    rules: Iterable[Rule],
    target_shapes: Mapping,
    dtype: Any = None,
    ignore: Callable[[str], bool] = lambda key: False,
    progress: bool = False,
) -> dict:
    """Fill the tree `target_shapes` (a nested dict of arrays / ShapeDtypeStructs) from `reader` by `rules`.

    Returns a nested dict of numpy arrays, each in its target leaf's dtype (or in `dtype` where given). Raises `CheckpointError` listing every missing source key,
    unexpected source key (not named by any rule and not `ignore`d), mis-shaped tensor, and unfilled leaf.
    """
    rules = list(rules)
    targets = _flatten(target_shapes)
    missing, misshaped, unknown_targets = [], [], []
    used: set[str] = set()
    for rule in rules:
        if rule.target not in targets:
            unknown_targets.append("/".join(rule.target))
        for key in rule.sources():
            if key in reader:
                used.add(key)
            else:
                missing.append(key)
    unexpected = [k for k in reader.keys() if k not in used and not ignore(k)]
    covered = {r.target for r in rules}
    unfilled = ["/".join(p) for p in targets if p not in covered]
    if missing or unexpected or unknown_targets or unfilled:
        raise CheckpointError(_report(reader.origin, missing, unexpected, [], unfilled + unknown_targets))

    out: dict[tuple, Array] = {}
    iterator = rules
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rules, desc=f"converting {os.path.basename(reader.origin.rstrip('/'))}", unit="tensor")
    for rule in iterator:
        want = tuple(targets[rule.target].shape)
        per_layer = want[1:] if rule.layers is not None else want
        leaf_dtype = dtype if dtype is not None else getattr(targets[rule.target], "dtype", np.float32)
        buf = np.empty(want, dtype=leaf_dtype)
        for i, key in enumerate(rule.sources()):
            try:
                value = rule.transform(reader.get(key))
            except ValueError as e:  # e.g. a reshape the tensor's size does not allow
                misshaped.append(f"{key}: shape {tuple(reader.shape(key))} fails the layout change: {e}")
                continue
            if tuple(value.shape) != per_layer:
                misshaped.append(
                    f"{key}: shape {tuple(reader.shape(key))} -> {tuple(value.shape)} after layout change, "
                    f"expected {per_layer} for {'/'.join(rule.target)}"
                )
                continue
            if rule.layers is None:
                buf[...] = value
            else:
                buf[i] = value
        out[rule.target] = buf
    if misshaped:
        raise CheckpointError(_report(reader.origin, [], [], misshaped, []))
    return _unflatten(out)


def _report(origin, missing, unexpected, misshaped, unfilled) -> str:
    lines = [f"checkpoint {origin} does not match the model:"]
    for title, items in (
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("mis-shaped tensors", misshaped),
        ("parameters no tensor fills", unfilled),
    ):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading converted parameters (orbax).


def save_params(params: Mapping, directory: str) -> None:
    """Write a parameter tree as an orbax checkpoint at `directory` (which must not exist yet)."""
    import orbax.checkpoint as ocp

    from etils import epath

    directory = directory if "://" in directory else os.path.abspath(directory)
    if epath.Path(directory).exists():
        raise FileExistsError(f"{directory} already exists; choose a new --dst")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, params)


def is_orbax_checkpoint(directory: str) -> bool:
    """Whether `directory` holds a checkpoint written by `save_params` (orbax metadata present)."""
    return any(name.startswith("_CHECKPOINT_METADATA") or name == "_METADATA" for name in os.listdir(directory))


def saved_shapes(directory: str) -> dict[str, tuple[int, ...]]:
    """{"blocks/block/ffn_0/kernel": shape, ...} of a parameter tree written by `save_params`, read from its
    metadata alone (no array is loaded)."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(os.path.abspath(directory)).item_metadata
    if metadata is None:
        raise CheckpointError(f"{directory}: its orbax metadata (_METADATA) is empty or unreadable")
    return {tree_path(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(metadata.tree)[0]}


def tree_path(path) -> str:
    """A pytree key path as "blocks/block/ffn_0/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def load_params(directory: str, target_shapes: Mapping | None = None) -> dict:
    """Read a parameter tree written by `save_params` (optionally restoring into `target_shapes`)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no fc_jax parameter checkpoint at {directory}")
    with ocp.StandardCheckpointer() as ckptr:
        if target_shapes is None:
            return ckptr.restore(directory)
        return ckptr.restore(directory, target_shapes)
