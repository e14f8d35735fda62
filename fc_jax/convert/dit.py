"""Wan2.2 DiT checkpoints -> WanDiT parameters.

Two source layouts, detected from the key names:
- official (Wan-Video/Wan2.2, sharded safetensors + index JSON): `time_embedding.0.weight`, `blocks.N.self_attn.q`, ...
- diffusers (`transformer/` folder): `condition_embedder.time_embedder.linear_1.weight`, `blocks.N.attn1.to_q`, ...
"""

from __future__ import annotations

import os

from fc_jax.convert.common import CheckpointError, Rule, conv, convert, identity, linear, open_tensors, reshape
from fc_jax.models import dit

# Our module path -> (official name, diffusers name) for the parts outside the blocks.
_TOP_LINEARS = {
    ("text_embedding_0",): ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding_1",): ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding_0",): ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding_1",): ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection",): ("time_projection.1", "condition_embedder.time_proj"),
    ("head",): ("head.head", "proj_out"),
}
# Inside block i.
_BLOCK_LINEARS = {
    **{("self_attn", p): (f"self_attn.{p}", f"attn1.to_{p}") for p in "qkv"},
    ("self_attn", "o"): ("self_attn.o", "attn1.to_out.0"),
    **{("cross_attn", p): (f"cross_attn.{p}", f"attn2.to_{p}") for p in "qkv"},
    ("cross_attn", "o"): ("cross_attn.o", "attn2.to_out.0"),
    ("ffn_0",): ("ffn.0", "ffn.net.0.proj"),
    ("ffn_1",): ("ffn.2", "ffn.net.2"),
}
_BLOCK_NORMS = {
    ("self_attn", "norm_q"): ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn", "norm_k"): ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn", "norm_q"): ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn", "norm_k"): ("cross_attn.norm_k", "attn2.norm_k"),
}

LAYOUTS = ("official", "diffusers")


def detect_layout(keys) -> str:
    keys = set(keys)
    if "condition_embedder.time_embedder.linear_1.weight" in keys:
        return "diffusers"
    if "time_embedding.0.weight" in keys:
        return "official"
    raise CheckpointError(
        "not a Wan DiT checkpoint: found neither 'time_embedding.0.weight' (official layout) nor "
        f"'condition_embedder.time_embedder.linear_1.weight' (diffusers layout); first keys: {sorted(keys)[:5]}"
    )


def dit_rules(layout: str, num_layers: int, dim: int) -> list[Rule]:
    """The complete key map for one layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    pick = LAYOUTS.index(layout)
    rules = [
        Rule(("patch_embedding", "kernel"), "patch_embedding.weight", conv),
        Rule(("patch_embedding", "bias"), "patch_embedding.bias"),
        Rule(("head_modulation",), ("head.modulation", "scale_shift_table")[pick], reshape((2, dim))),
    ]
    for path, names in _TOP_LINEARS.items():
        rules.append(Rule(path + ("kernel",), names[pick] + ".weight", linear))
        rules.append(Rule(path + ("bias",), names[pick] + ".bias"))

    def block(path, name, transform=identity):
        return Rule(("blocks", "block") + path, "blocks.{i}." + name, transform, layers=num_layers)

    rules.append(block(("modulation",), ("modulation", "scale_shift_table")[pick], reshape((6, dim))))
    for path, names in _BLOCK_LINEARS.items():
        rules.append(block(path + ("kernel",), names[pick] + ".weight", linear))
        rules.append(block(path + ("bias",), names[pick] + ".bias"))
    for path, names in _BLOCK_NORMS.items():
        rules.append(block(path + ("scale",), names[pick] + ".weight"))
    norm3 = ("norm3", "norm2")[pick]  # the affine cross-attention LayerNorm
    rules.append(block(("norm3", "scale"), norm3 + ".weight"))
    rules.append(block(("norm3", "bias"), norm3 + ".bias"))
    return rules


def convert_checkpoint(src: str, config, progress: bool = True) -> dict:
    """Read a Wan2.2 DiT checkpoint (either layout) into our parameter tree, in the config's param dtype."""
    model = dit.build_model(config)
    reader = open_tensors(src)
    layout = detect_layout(reader.keys())
    cfg = model.cfg
    rules = dit_rules(layout, cfg.num_layers, cfg.dim)
    shapes = dit.abstract_params(model)
    # Each leaf keeps the dtype the model declares: fp32 modulation tables and norms, the rest in param_dtype.
    return convert(reader, rules, shapes, progress=progress)


def load_dit_params(path: str, config) -> dict:
    """Parameters from an fc_jax (orbax) checkpoint folder, or straight from an official / diffusers checkpoint."""
    from fc_jax.convert.common import is_orbax_checkpoint, load_params

    if os.path.isdir(path) and is_orbax_checkpoint(path):
        return load_params(path)
    return convert_checkpoint(path, config)
