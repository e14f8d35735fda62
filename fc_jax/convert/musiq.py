"""Official MUSIQ checkpoints (google-research `musiq/`, e.g. `spaq_ckpt.npz`) -> `fc_jax.models.musiq.Musiq` params.

The official files are numpy `.npz` archives of the flax optimizer: parameters under `opt/target/<path>` with `/`
between module names (`opt/target/Transformer/encoderblock_0/SelfAttention_0/query/kernel`), optimizer state
under `opt/state/...` (skipped). A params-only archive (keys without the `opt/target/` prefix) loads too. Our
module tree uses the official names, so each leaf maps to the key of the same path. Read with
`np.load(allow_pickle=False)`: nothing is unpickled.

`convert_pyiqa_state_dict` reads the PyTorch port in pyiqa (`pyiqa.archs.musiq_arch.MUSIQ`: a state dict, or one
of its `.pth` files, which hold the official weights re-laid out for PyTorch) into the same tree.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from fc_jax.convert.common import (
    CheckpointError,
    Rule,
    TensorReader,
    _flatten,
    conv,
    convert,
    linear,
    open_tensors,
    reshape,
)
from fc_jax.models.musiq import MusiqConfig, musiq_target_shapes

PREFIX = "opt/target/"


def open_npz(path: str) -> TensorReader:
    """A `.npz` archive as a TensorReader (arrays read on first access)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MUSIQ checkpoint not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a numpy .npz archive ({e})") from e
    arrays = {k: archive[k] for k in archive.files}
    return TensorReader({k: (lambda v=v: v) for k, v in arrays.items()}, {k: v.shape for k, v in arrays.items()}, path)


def convert_checkpoint(src: str, config: MusiqConfig = MusiqConfig()) -> dict:
    """An official MUSIQ `.npz` -> our parameter tree (numpy). CheckpointError lists every mismatch."""
    reader = open_npz(src)
    prefix = PREFIX if any(k.startswith(PREFIX) for k in reader.keys()) else ""
    shapes = musiq_target_shapes(config)
    rules = [Rule(path, prefix + "/".join(path)) for path in _flatten(shapes)]
    return convert(reader, rules, shapes, ignore=lambda k: bool(prefix) and not k.startswith(prefix))


def pyiqa_rules(config: MusiqConfig = MusiqConfig()) -> list[Rule]:
    """pyiqa `MUSIQ` state-dict keys -> our leaves. Convs [out, in, kh, kw] -> [kh, kw, in, out]; Linear [out, in]
    -> [in, out]; the attention projections' flat D axis splits into (heads, head_dim) as flax's DenseGeneral."""
    d, h = config.hidden_size, config.num_heads
    rules = [Rule(("conv_root", "kernel"), "conv_root.weight", conv),
             Rule(("gn_root", "scale"), "gn_root.weight"), Rule(("gn_root", "bias"), "gn_root.bias"),
             Rule(("embedding", "kernel"), "embedding.weight", linear), Rule(("embedding", "bias"), "embedding.bias")]
    head = "head.0" if config.num_classes > 1 else "head"  # pyiqa wraps a multi-class head with a Softmax
    rules += [Rule(("head", "kernel"), f"{head}.weight", linear), Rule(("head", "bias"), f"{head}.bias")]
    for name in ("1", "2", "3", "_proj"):
        unit = ("block1", "unit1")
        rules += [Rule(unit + (f"conv{name}", "kernel"), f"block1.conv{name}.weight", conv),
                  Rule(unit + (f"gn{name}", "scale"), f"block1.gn{name}.weight"),
                  Rule(unit + (f"gn{name}", "bias"), f"block1.gn{name}.bias")]
    t, enc = ("Transformer",), "transformer_encoder."
    rules += [Rule(t + ("cls",), enc + "cls"),
              Rule(t + ("posembed_input", "pos_embedding"), enc + "posembed_input.position_emb"),
              Rule(t + ("scaleembed_input", "scale_embedding"), enc + "scaleembed_input.scale_emb",
                   reshape((1, config.num_scales, d))),
              Rule(t + ("encoder_norm", "scale"), enc + "encoder_norm.weight"),
              Rule(t + ("encoder_norm", "bias"), enc + "encoder_norm.bias")]
    for i in range(config.num_layers):
        b, src = t + (f"encoderblock_{i}",), f"{enc}transformer.encoderblock_{i}."
        for ours, theirs in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            rules += [Rule(b + (ours, "scale"), src + theirs + ".weight"),
                      Rule(b + (ours, "bias"), src + theirs + ".bias")]
        for proj in ("query", "key", "value"):
            rules += [Rule(b + ("SelfAttention_0", proj, "kernel"), src + f"attention.{proj}.weight",
                           lambda x: linear(x).reshape(d, h, d // h)),
                      Rule(b + ("SelfAttention_0", proj, "bias"), src + f"attention.{proj}.bias", reshape((h, d // h)))]
        rules += [Rule(b + ("SelfAttention_0", "out", "kernel"), src + "attention.out.weight",
                       lambda x: linear(x).reshape(h, d // h, d)),
                  Rule(b + ("SelfAttention_0", "out", "bias"), src + "attention.out.bias")]
        for ours, theirs in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            rules += [Rule(b + ("MlpBlock_0", ours, "kernel"), src + f"mlp.{theirs}.weight", linear),
                      Rule(b + ("MlpBlock_0", ours, "bias"), src + f"mlp.{theirs}.bias")]
    return rules


def convert_pyiqa_state_dict(src: str | Mapping[str, Any], config: MusiqConfig = MusiqConfig()) -> dict:
    """pyiqa's PyTorch MUSIQ -> our parameter tree (numpy): `src` is its state dict (torch tensors or numpy
    arrays) or a `.pth` file of one (read weights-only). CheckpointError lists every mismatch.

    Only the weights carry over: pyiqa's forward differs from the official model (tests/test_musiq_pyiqa_parity.py):
    bicubic instead of Gaussian resizing, exact instead of tanh GELU, unbiased weight-standardisation std."""
    if isinstance(src, str):
        reader = open_tensors(src)
    else:
        reader = TensorReader({k: (lambda v=v: v) for k, v in src.items()},
                              {k: tuple(v.shape) for k, v in src.items()}, "pyiqa MUSIQ state dict")
    return convert(reader, pyiqa_rules(config), musiq_target_shapes(config))
