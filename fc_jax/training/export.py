"""One parameter tree out of a training checkpoint, written as a bare parameter folder (the library half of
`python -m fc_jax.export`, whose docstring tells the fields and the generate-ready layout; the tiny-world recipe
uses it too). Only the chosen tree of the chosen step is read, never the optimizer state. A LoRA run's tree
(`{"base", "lora"}`, `config.train.trainable = "lora"`) is written merged: plain DiT parameters, as any other
run's, so the next stage and generate need nothing of LoRA."""

from __future__ import annotations

import json
import os
import sys

import jax
import orbax.checkpoint as ocp
from etils import epath

from fc_jax.convert.common import is_orbax_checkpoint, save_params
from fc_jax.training import peft


def _state_tree(checkpoints: str, step: int) -> dict:
    """The saved state's metadata tree {field: ArrayMetadata tree | None} of `step`."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.metadata(_state_dir(checkpoints, step)).item_metadata.tree


def _state_dir(checkpoints: str, step: int):
    # Absolute: orbax reads no metadata through a relative path (it returns None).
    return epath.Path(os.path.abspath(checkpoints)) / str(step) / "state"


def _saved_config(checkpoints: str, step: int) -> dict:
    """The config saved with `step` (as JSON)."""
    return json.loads((epath.Path(checkpoints) / str(step) / "config" / "metadata").read_text())


def _stage_exports(checkpoints: str, step: int) -> tuple[str, ...]:
    """The parameter trees the run's stage exports, its default first (from the config saved with `step`)."""
    from fc_jax.training.stages import get_stage

    return get_stage(_saved_config(checkpoints, step).get("stage", "sft")).exports


def merged_parameters(params: dict, config: dict) -> dict:
    """`params`, with LoRA factors merged into their kernels where it is a LoRA tree (`fc_jax.training.peft`;
    alpha / rank from the run's saved `config`)."""
    if not peft.is_lora_tree(params):
        return params
    lora = config["train"]["lora"]
    scale = float(lora["alpha"]) / int(lora["rank"])
    print(f"merging the LoRA factors (rank {lora['rank']}, alpha {lora['alpha']}) into the base parameters",
          file=sys.stderr)
    return jax.jit(lambda p: peft.merge_lora(p, scale))(params)


def _parameter_fields(tree: dict) -> list[str]:
    """Fields of the state that hold a parameter tree (nested dicts of arrays), in saved order."""
    return [k for k, v in tree.items() if isinstance(v, dict) and v and k not in ("generator_opt", "critic_opt")]


def resolve_step(checkpoints: str, step: int | None) -> int:
    """`step`, checked to exist, or the latest step in `checkpoints`."""
    if not epath.Path(checkpoints).is_dir():
        raise FileNotFoundError(f"no checkpoints folder at {checkpoints} (expected WORKDIR/checkpoints of a run)")
    with ocp.CheckpointManager(checkpoints) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{checkpoints} holds no finished checkpoint")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ValueError(f"step {step} is not in {checkpoints}; saved steps: {steps}")
    return step


def resolve_which(checkpoints: str, step: int, which: str | None) -> str:
    """`which`, checked to be a parameter tree of the state of `step`, or the stage's default export."""
    tree = _state_tree(checkpoints, step)
    fields = _parameter_fields(tree)
    if which is None:
        which = next((f for f in _stage_exports(checkpoints, step) if f in fields), None)
        if which is None:
            raise ValueError(f"{checkpoints}/{step}: no parameter tree among the state's fields {list(tree)}")
    elif which not in fields:
        raise ValueError(f"--which={which!r}: the state of {checkpoints}/{step} has parameter trees {fields}")
    return which


def read_parameters(checkpoints: str, step: int, which: str) -> dict:
    """The parameter tree `which` (`resolve_which`) of step `step`, as host-local jax Arrays on one device."""
    tree = _state_tree(checkpoints, step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = {which: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree[which])}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(_state_dir(checkpoints, step),
                                        args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                    partial_restore=True))
    return restored[which]


def generate_parts(vae: str | None, text_cache: str | None, umt5: str | None) -> dict[str, str]:
    """{name in the generate-ready folder: source} for `--vae` plus `--text_cache` or `--umt5` (empty without
    them); ValueError / FileNotFoundError naming the flag when one is missing, not what it should be, or alone."""
    if not (vae or text_cache or umt5):
        return {}
    if not vae or not (text_cache or umt5):
        raise ValueError("a generate-ready checkpoint needs --vae and a text source (--text_cache or --umt5); got "
                         + ", ".join(f"--{n}" for n, v in (("vae", vae), ("text_cache", text_cache), ("umt5", umt5))
                                     if v))
    parts = {"vae": vae}
    for flag, path in (("vae", vae), ("umt5", umt5)):
        if path and not (os.path.isdir(path) and is_orbax_checkpoint(path)):
            found = "a folder without orbax metadata" if os.path.isdir(path) else "no such folder"
            raise FileNotFoundError(f"--{flag}={path}: expected a parameter folder written by `python -m "
                                    f"fc_jax.convert {flag}`; found {found}")
    if umt5:
        parts["umt5"] = umt5
    if text_cache:
        from fc_jax.text import EmbeddingCache

        try:
            cache = EmbeddingCache.load(text_cache)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"--text_cache={text_cache}: expected an fc_jax.text.EmbeddingCache .npz; it does not "
                             f"read ({type(e).__name__}: {e})") from e
        if not len(cache):
            raise ValueError(f"--text_cache={text_cache} holds no prompt; add the prompts you will generate with")
        parts["text_cache.npz"] = text_cache
    return parts


def _copy(src: str, dst: epath.Path) -> None:
    """Copy the file or folder `src` to `dst` (which must not exist)."""
    source = epath.Path(src)
    if source.is_file():
        source.copy(dst)
        return
    dst.mkdir(parents=True)
    for child in source.iterdir():
        _copy(str(child), dst / child.name)


def check_export(workdir: str, dst: str, step: int | None = None, which: str | None = None) -> tuple[str, int, str]:
    """(checkpoints folder, step, field) of an export, each checked (FileExistsError, FileNotFoundError or
    ValueError naming it): `dst` new, the run's checkpoints there, the step saved, the field a parameter tree."""
    if epath.Path(dst).exists():
        raise FileExistsError(f"--dst={dst} already exists; choose a new folder")
    checkpoints = str(epath.Path(workdir) / "checkpoints")
    step = resolve_step(checkpoints, step)
    return checkpoints, step, resolve_which(checkpoints, step, which)


def export_parameters(workdir: str, dst: str, step: int | None = None, which: str | None = None,
                      parts: dict[str, str] | None = None) -> dict:
    """Write the parameters `which` of `step` (default: latest) of the run in `workdir` to the new folder `dst`;
    with `parts` ({name: source}, `generate_parts`) to `dst/dit`, the parts copied beside it. Returns a summary
    {step, which, parameters, dst, parts}."""
    checkpoints, step, which = check_export(workdir, dst, step, which)
    print(f"reading {which} of step {step} from {checkpoints}", file=sys.stderr)
    params = merged_parameters(read_parameters(checkpoints, step, which), _saved_config(checkpoints, step))
    count = sum(int(x.size) for x in jax.tree.leaves(params))
    target = str(epath.Path(dst) / "dit") if parts else dst
    print(f"writing {which}: {count:,} parameters to {target}", file=sys.stderr)
    save_params(params, target)
    for name, source in (parts or {}).items():
        print(f"copying {source} to {epath.Path(dst) / name}", file=sys.stderr)
        _copy(source, epath.Path(dst) / name)
    return {"step": step, "which": which, "parameters": count, "dst": dst, "parts": ["dit", *parts] if parts else []}
