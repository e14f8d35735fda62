"""Which parameters a single-network stage trains (`config.train.trainable`), as pure functions over the tree.

- "all" (default): every parameter; the optimizer sees the plain tree, exactly as without this module.
- "attention": only the DiT's attention modules, `self_attn` and `cross_attn` of every block: their q, k, v, o
  kernels and biases and their q/k RMSNorm scales (`norm3`, the block's affine LayerNorm in front of the
  cross-attention, and the modulation tables stay frozen).
- "lora": the parameters become `{"base": the DiT's tree, "lora": factors}`, the base frozen. The factors mirror the
  module paths of the Dense kernels named by `config.train.lora.target_modules` (default q, k, v, o of both
  attentions): a kernel `blocks/block/self_attn/q/kernel` [L, in, out] gets `lora/blocks/block/self_attn/q/{a, b}`,
  a [L, in, r] ~ U(±1/√in) and b [L, r, out] = 0, so the model starts as the base. The forward is the unchanged
  WanDiT on `merge_lora(params, alpha / rank)`: every targeted kernel W + (alpha / rank)·a@b. Exports write the
  merged plain tree (`fc_jax.training.export`).

A frozen leaf gets no gradient (the step differentiates the trainable leaves only), no optimizer state
(`optax.MaskedNode` in its place) and no update; it stays bit-identical. Masks are trees of Python bools in the
structure of the parameters; a flax `Partitioned` box (the logical-axis metadata of `model.init`) counts as one
leaf, so the same functions serve the boxed tree the state layout is traced from.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

MODES = ("all", "attention", "lora")
ATTENTION_MODULES = ("self_attn", "cross_attn")
LORA_KEY = 0x10AA  # the LoRA factors are drawn from fold_in(seed key, LORA_KEY): the base init is unchanged


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _map(f, tree):
    """`f(names, leaf)` over the leaves (boxes whole), names the key path as a tuple of strings."""
    return jax.tree_util.tree_map_with_path(lambda path, x: f(_names(path), x), tree, is_leaf=_is_box)


def _leaves(tree) -> list[tuple[tuple[str, ...], Any]]:
    return [(_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)[0]]


def _value(x):
    return x.value if _is_box(x) else x


def _under(names: tuple[str, ...], module: str) -> bool:
    """Whether the leaf at `names` lies in the module `module` ("self_attn", "q", "self_attn/q"): its names appear
    in a row among the leaf's module path (the names before the leaf's own)."""
    parts, modules = tuple(module.split("/")), names[:-1]
    return any(modules[i:i + len(parts)] == parts for i in range(len(modules) - len(parts) + 1))


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"config.train.trainable {mode!r}: expected one of {MODES}")


def is_lora_tree(params) -> bool:
    return isinstance(params, Mapping) and set(params) == {"base", "lora"}


def module_mask(params, modules) -> Any:
    """True on the leaves under any of `modules` (see `_under`)."""
    return _map(lambda names, _: any(_under(names, m) for m in modules), params)


def trainable_mask(params, mode: str, target_modules=ATTENTION_MODULES) -> Any:
    """A bool tree in the structure of `params`: True where `mode` trains the leaf. "attention": the leaves under
    `target_modules`; "lora": the `lora` subtree of a `{"base", "lora"}` tree."""
    check_mode(mode)
    if mode == "all":
        return _map(lambda names, _: True, params)
    if mode == "lora":
        if not is_lora_tree(params):
            found = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(f"config.train.trainable 'lora' needs the parameters as {{'base', 'lora'}} "
                             f"(`with_lora`); found {found}")
        return {"base": _map(lambda names, _: False, params["base"]),
                "lora": _map(lambda names, _: True, params["lora"])}
    mask = module_mask(params, target_modules)
    if not any(jax.tree.leaves(mask)):
        top = sorted({names[0] for names, _ in _leaves(params)})
        raise ValueError(f"config.train.trainable 'attention': no parameter lies under the modules "
                         f"{tuple(target_modules)}; the tree's top-level entries are {top}")
    return mask


def select(tree, mask):
    """`tree` with every frozen leaf (mask False) replaced by `optax.MaskedNode()`: what the gradient, the optimizer
    and the EMA see. `mask` None: `tree`."""
    if mask is None:
        return tree
    return jax.tree.map(lambda m, x: x if m else optax.MaskedNode(), mask, tree)


def combine(selected, tree, mask):
    """The full tree: the trainable leaves of `selected` (from `select`), the frozen ones of `tree`."""
    if mask is None:
        return selected
    return jax.tree.map(lambda m, s, x: s if m else x, mask, selected, tree)


def parameter_counts(params, mask) -> tuple[int, int]:
    """(trainable, total) numbers of parameters; `mask` None: all trainable."""
    sizes = [int(_value(x).size) for _, x in _leaves(params)]
    flags = [True] * len(sizes) if mask is None else jax.tree.leaves(mask)
    return sum(s for s, f in zip(sizes, flags) if f), sum(sizes)


# ----------------------------------------------------------------------------------------------------------------
# LoRA


def check_lora(rank: int, alpha: float) -> None:
    if int(rank) <= 0:
        raise ValueError(f"config.train.lora.rank must be a positive integer; got {rank}")
    if float(alpha) <= 0:
        raise ValueError(f"config.train.lora.alpha must be positive; got {alpha}")


def lora_kernels(params, target_modules) -> list[tuple[str, ...]]:
    """The key paths of the Dense kernels (`.../<module>/kernel`, ≥ 2-d) under any of `target_modules`; ValueError
    naming the targets that match none, and the kernels' modules there are."""
    kernels = [names for names, x in _leaves(params) if names[-1] == "kernel" and _value(x).ndim >= 2]
    missing = [t for t in target_modules if not any(_under(n, t) for n in kernels)]
    if not target_modules or missing:
        problem = f"{missing} match no Dense kernel" if missing else "empty"
        raise ValueError(f"config.train.lora.target_modules {tuple(target_modules)}: {problem}; expected names (or "
                         f"paths like 'self_attn/q') of modules holding Dense kernels, found modules "
                         f"{sorted({n[-2] for n in kernels})}")
    return [names for names in kernels if any(_under(names, t) for t in target_modules)]


def _factors(key, kernel, rank: int) -> dict:
    """{"a": [..., in, r] ~ U(±1/√in), "b": [..., r, out] zeros} for a (possibly boxed) kernel [..., in, out],
    boxed with the kernel's logical names where it is boxed."""
    w = _value(kernel)
    fan_in, out = w.shape[-2], w.shape[-1]
    bound = 1.0 / float(fan_in) ** 0.5
    a = jax.random.uniform(key, w.shape[:-1] + (rank,), w.dtype, -bound, bound)
    b = jnp.zeros(w.shape[:-2] + (rank, out), w.dtype)
    if not _is_box(kernel):
        return {"a": a, "b": b}
    names = tuple(kernel.names)
    return {"a": kernel.replace(value=a, names=names[:-1] + (None,)),
            "b": kernel.replace(value=b, names=names[:-2] + (None, names[-1]))}


def init_lora(key, params, target_modules, rank: int) -> dict:
    """The factors of every targeted kernel of `params`, nested as the kernels' module paths."""
    leaves = dict(_leaves(params))
    lora: dict = {}
    for i, names in enumerate(lora_kernels(params, target_modules)):
        node = lora
        for n in names[:-2]:
            node = node.setdefault(n, {})
        node[names[-2]] = _factors(jax.random.fold_in(key, i), leaves[names], rank)
    return lora


def with_lora(params, key, target_modules, rank: int) -> dict:
    """{"base": params, "lora": `init_lora(key, params, ...)`}."""
    return {"base": params, "lora": init_lora(key, params, target_modules, rank)}


def _lookup(tree, names):
    for n in names:
        if not isinstance(tree, Mapping) or n not in tree:
            return None
        tree = tree[n]
    return tree


def merge_lora(params, scale: float) -> dict:
    """The plain parameter tree of a `{"base", "lora"}` tree: each targeted kernel W + scale·a@b (fp32 sum, in W's
    dtype), every other leaf the base's."""
    lora = params["lora"]

    def merge(names, w):
        factors = _lookup(lora, names[:-1]) if names[-1] == "kernel" else None
        if factors is None:
            return w
        delta = jnp.matmul(factors["a"].astype(jnp.float32), factors["b"].astype(jnp.float32))
        return (w.astype(jnp.float32) + scale * delta).astype(w.dtype)

    return _map(merge, params["base"])


# ----------------------------------------------------------------------------------------------------------------
# The config's choice


@dataclasses.dataclass(frozen=True)
class Trainable:
    """`config.train.trainable` with its LoRA settings, plus `also`: modules trained in every mode (the widened
    patch embedding of a channel-concat DiT, whose new condition channels start at zero)."""

    mode: str = "all"
    lora_targets: tuple[str, ...] = ()
    rank: int = 0
    alpha: float = 0.0
    also: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config) -> "Trainable":
        """From a full config: `train.trainable`, `train.lora`, `model.condition`."""
        mode = config.train.get("trainable", "all")
        check_mode(mode)
        also = ("patch_embedding",) if config.model.get("condition", "in_context") == "channel_concat" else ()
        if mode != "lora":
            return cls(mode, also=also)
        lora = config.train.lora
        check_lora(lora.rank, lora.alpha)
        return cls(mode, tuple(lora.target_modules), int(lora.rank), float(lora.alpha), also)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def wrap(self, params, key):
        """The trainable tree around freshly built (or pretrained) DiT parameters: LoRA adds its factors."""
        return with_lora(params, key, self.lora_targets, self.rank) if self.mode == "lora" else params

    def base(self, tree):
        """The DiT part of a tree in the layout of `wrap`'s output (parameters, shardings, shapes)."""
        return tree["base"] if self.mode == "lora" else tree

    def mask(self, params):
        """The trainable mask of `wrap`'s output; None in mode "all" (nothing masked)."""
        if self.mode == "all":
            return None
        mask = trainable_mask(params, self.mode)
        return jax.tree.map(operator.or_, mask, module_mask(params, self.also)) if self.also else mask

    def merge(self, params):
        """Plain DiT parameters for the forward (LoRA merged)."""
        return merge_lora(params, self.scale) if self.mode == "lora" else params

    def describe(self, params) -> str:
        """One line: trainable of total parameters, and what trains."""
        trainable, total = parameter_counts(params, self.mask(params))
        what = {"all": "all", "attention": "attention only",
                "lora": f"LoRA rank {self.rank}, alpha {self.alpha:g} on {list(self.lora_targets)}"}[self.mode]
        extra = f", plus {list(self.also)}" if self.also and self.mode != "all" else ""
        return (f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f}%; "
                f"train.trainable={self.mode!r}: {what}{extra})")
