"""TFace IR backbones (e.g. the public `glint360k_curricular_face_r101_backbone.bin`) -> `IResNet` params.

PyTorch names (`model_irse.Backbone`): `input_layer.{0: conv, 1: BN, 2: PReLU}`,
`body.N.res_layer.{0: BN, 1: conv3x3, 2: BN, 3: PReLU, 4: conv3x3/stride, 5: BN}`,
`body.N.shortcut_layer.{0: conv1x1, 1: BN}` (only where the width changes),
`output_layer.{0: BN2d, 3: Linear, 4: BN1d without affine}`. BN buffers `running_mean` / `running_var` become
`mean` / `var`; `num_batches_tracked` is skipped. The Linear after the flatten reads PyTorch's (C, H, W) order;
ours flattens (H, W, C), so its input axis is permuted once here. Read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import numpy as np

from fc_jax.convert.common import Rule, conv, convert, identity, open_tensors
from fc_jax.models.iresnet import IResNetConfig, iresnet_target_shapes


def _bn(ours: tuple, theirs: str, affine: bool = True) -> list[Rule]:
    rules = [Rule(ours + ("mean",), theirs + ".running_mean"), Rule(ours + ("var",), theirs + ".running_var")]
    if affine:
        rules += [Rule(ours + ("scale",), theirs + ".weight"), Rule(ours + ("bias",), theirs + ".bias")]
    return rules


def _flatten_linear(channels: int, side: int):
    """Linear weight [out, C*H*W] (torch flatten order) -> Dense kernel [H*W*C, out]."""

    def transform(w: np.ndarray) -> np.ndarray:
        out = w.shape[0]
        w = w.reshape(out, channels, side, side).transpose(2, 3, 1, 0)
        return np.ascontiguousarray(w.reshape(side * side * channels, out))

    return transform


def rules(config: IResNetConfig) -> list[Rule]:
    r = [Rule(("input_conv", "kernel"), "input_layer.0.weight", conv), *_bn(("input_bn",), "input_layer.1"),
         Rule(("input_prelu", "alpha"), "input_layer.2.weight")]
    index, in_width = 0, config.widths[0]
    for units, width in zip(config.stage_units, config.widths):
        for _ in range(units):
            ours, theirs = f"body_{index}", f"body.{index}."
            r += [*_bn((ours, "bn1"), theirs + "res_layer.0"),
                  Rule((ours, "conv1", "kernel"), theirs + "res_layer.1.weight", conv),
                  *_bn((ours, "bn2"), theirs + "res_layer.2"),
                  Rule((ours, "prelu", "alpha"), theirs + "res_layer.3.weight"),
                  Rule((ours, "conv2", "kernel"), theirs + "res_layer.4.weight", conv),
                  *_bn((ours, "bn3"), theirs + "res_layer.5")]
            if in_width != width:
                r += [Rule((ours, "shortcut_conv", "kernel"), theirs + "shortcut_layer.0.weight", conv),
                      *_bn((ours, "shortcut_bn"), theirs + "shortcut_layer.1")]
            index, in_width = index + 1, width
    side = config.input_size // 2 ** len(config.stage_units)
    r += [*_bn(("output_bn",), "output_layer.0"),
          Rule(("output_linear", "kernel"), "output_layer.3.weight", _flatten_linear(config.widths[-1], side)),
          Rule(("output_linear", "bias"), "output_layer.3.bias", identity),
          *_bn(("output_bn1d",), "output_layer.4", affine=False)]
    return r


def convert_checkpoint(src: str, config: IResNetConfig = IResNetConfig()) -> dict:
    """A TFace IR state dict (`.bin` / `.pth`, weights only) -> our parameter tree (numpy)."""
    return convert(open_tensors(src), rules(config), iresnet_target_shapes(config),
                   ignore=lambda k: k.endswith("num_batches_tracked"))
