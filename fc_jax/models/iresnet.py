"""IR-101, the CurricularFace backbone (TFace `model_irse.Backbone(112, 100, 'ir')`), for face identity embeddings.

    x [B, 112, 112, 3] in [-1, 1]
      -> input layer: conv 3x3 (no bias) + BN + PReLU, 64 channels
      -> 4 stages of BasicBlockIR units (3, 13, 30, 3; widths 64, 128, 256, 512); the first unit of each stage has
         stride 2: res = BN -> conv3x3 -> BN -> PReLU -> conv3x3/stride -> BN, shortcut = subsample (same width)
         or conv1x1/stride + BN; out = res + shortcut
      -> output layer: BN -> flatten (7 x 7 x 512) -> Linear(25088, 512) -> BN without affine
      -> embedding [B, 512] (not normalised)

Convolutions pad 1 on every side (PyTorch `padding=1`), not 'SAME', which pads strided convs asymmetrically.
BatchNorm runs on its stored statistics (eps 1e-5); they live in the `params` tree beside the affine terms.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class IResNetConfig:
    """Defaults: IR-101 at 112 px (TFace, as in `glint360k_curricular_face_r101_backbone.bin`)."""

    stage_units: tuple[int, ...] = (3, 13, 30, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    embedding_size: int = 512
    input_size: int = 112


class BatchNorm(nn.Module):
    """Inference BatchNorm over the last axis with stored `mean` / `var` (and `scale` / `bias` when affine)."""

    affine: bool = True
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param("bias", nn.initializers.zeros, (c,))
        return y


class PReLU(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, a * x)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                   name=name)


class BasicBlockIR(nn.Module):
    """[B, h, w, c_in] -> [B, h / stride, w / stride, depth]."""

    depth: int
    stride: int

    @nn.compact
    def __call__(self, x):
        if x.shape[-1] == self.depth:
            shortcut = x[:, :: self.stride, :: self.stride]  # MaxPool2d(kernel 1, stride)
        else:
            shortcut = BatchNorm(name="shortcut_bn")(_conv(self.depth, 1, self.stride, "shortcut_conv")(x))
        y = BatchNorm(name="bn1")(x)
        y = PReLU(name="prelu")(BatchNorm(name="bn2")(_conv(self.depth, 3, 1, "conv1")(y)))
        y = BatchNorm(name="bn3")(_conv(self.depth, 3, self.stride, "conv2")(y))
        return y + shortcut


class IResNet(nn.Module):
    """Aligned faces [B, S, S, 3] in [-1, 1] (S = input_size) -> embeddings [B, embedding_size]."""

    config: IResNetConfig = IResNetConfig()

    @nn.compact
    def __call__(self, x):
        c = self.config
        if x.shape[1:] != (c.input_size, c.input_size, 3):
            raise ValueError(f"IResNet expects faces [B, {c.input_size}, {c.input_size}, 3], got {x.shape}")
        x = PReLU(name="input_prelu")(BatchNorm(name="input_bn")(_conv(c.widths[0], 3, 1, "input_conv")(x)))
        index = 0
        for units, width in zip(c.stage_units, c.widths):
            for u in range(units):
                x = BasicBlockIR(width, 2 if u == 0 else 1, name=f"body_{index}")(x)
                index += 1
        x = BatchNorm(name="output_bn")(x)
        x = nn.Dense(c.embedding_size, name="output_linear")(x.reshape(x.shape[0], -1))
        return BatchNorm(affine=False, name="output_bn1d")(x)


def iresnet_target_shapes(config: IResNetConfig) -> dict:
    faces = jax.ShapeDtypeStruct((1, config.input_size, config.input_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: IResNet(config).init(jax.random.key(0), x), faces)["params"]
