"""MUSIQ, the multi-scale image quality transformer (Ke et al. 2021), as google-research `musiq/` defines it.

An image becomes one token sequence: 32x32 patches of the image resized (Gaussian kernel, aspect kept) so its
long side is 224, then 384, then of the image at its own size. Each token carries
- a **hashed spatial position**: the patch grid (count_h x count_w) is mapped by nearest-neighbour onto a fixed
  G x G grid (G = 10), index `row_hash * G + col_hash`, so any resolution shares one G*G position table;
- a **scale id** (0, 1, ... in order of increasing long side; the native resolution is last) into a learned
  scale embedding;
- a mask (the resized scales are zero-padded to `ceil(long / 32)^2` tokens).
Patches are embedded by a small ResNet (weight-standardised conv 7x7/2 + GroupNorm + max-pool, one bottleneck
unit), then a pre-norm transformer with a class token; the head reads the class token. SPAQ: one output, a MOS
in [0, 100].

Parameter names are the official ones (`Transformer/encoderblock_N/SelfAttention_0/query/kernel`, ...), so the
official `.npz` checkpoints map one to one (`fc_jax.convert.musiq`). `multiscale_patches` (numpy) reproduces the
official TensorFlow preprocessing.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MusiqConfig:
    """Defaults: the official multi-scale checkpoints (SPAQ, KonIQ, ...); `num_classes` 10 for AVA."""

    patch_size: int = 32
    hidden_size: int = 384
    mlp_dim: int = 1152
    num_heads: int = 6
    num_layers: int = 14
    grid_size: int = 10  # hash grid G
    longer_side_lengths: tuple[int, ...] = (224, 384)
    use_original_resolution: bool = True
    num_classes: int = 1
    resnet_width: int = 64  # RESNET_TOKEN_DIM; one bottleneck unit (the official `resnet_emb.num_layers = 5`)

    @property
    def num_scales(self) -> int:
        return len(self.longer_side_lengths) + int(self.use_original_resolution)


# ------------------------------------------------------------------------------------------------------------
# Preprocessing (numpy; the official TensorFlow ops re-derived).


def _gaussian_weights(in_size: int, out_size: int) -> np.ndarray:
    """TF `scale_and_translate` with the Gaussian kernel (radius 1.5, sigma 0.5), no antialiasing, as
    `tf.image.resize(..., method=GAUSSIAN)` runs it: [out_size, in_size] float32 row-stochastic weights."""
    scale = np.float32(out_size) / np.float32(in_size)
    inv_scale = np.float32(1.0) / scale
    radius, sigma = np.float32(1.5), np.float32(0.5)
    weights = np.zeros((out_size, in_size), np.float32)
    for x in range(out_size):
        sample = (np.float32(x) + np.float32(0.5)) * inv_scale
        if sample < 0 or sample > in_size:
            continue
        start = int(np.clip(math.ceil(sample - radius - np.float32(0.5)), 0, in_size - 1))
        end = int(np.clip(math.floor(sample + radius - np.float32(0.5)), 0, in_size - 1)) + 1
        src = np.arange(start, end, dtype=np.float32)
        pos = np.abs(src + np.float32(0.5) - sample)
        w = np.where(pos < radius, np.exp(-pos * pos / (np.float32(2.0) * sigma * sigma)), 0).astype(np.float32)
        total = w.sum(dtype=np.float32)
        if abs(total) >= 1000.0 * np.finfo(np.float32).tiny:
            weights[x, start:end] = w / total
    return weights


def gaussian_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`tf.image.resize(image, (height, width), method=GAUSSIAN)` for float [H, W, C] -> [height, width, C]."""
    wh = _gaussian_weights(image.shape[0], height)
    ww = _gaussian_weights(image.shape[1], width)
    # Separable, one axis at a time (two BLAS products): a single three-operand einsum runs as one unfactored
    # loop over out_h * in_h * in_w * out_w * C terms, minutes per frame at 384.
    rows = np.tensordot(wh, image.astype(np.float32), axes=(1, 0))  # [height, W, C]
    return np.tensordot(ww, rows, axes=(1, 1)).transpose(1, 0, 2).astype(np.float32)  # [height, width, C]


def hashed_positions(grid_size: int, count_h: int, count_w: int) -> np.ndarray:
    """Hash-grid position of each patch, row-major: int32 [count_h * count_w] in [0, G*G).

    The official code resizes `range(G)` to `count` entries with TF1 nearest neighbour (no half-pixel centres):
    entry j takes `floor(j * (G / count))` (float32), capped at G - 1.
    """

    def ladder(count):
        scale = np.float32(grid_size) / np.float32(count)
        return np.minimum(np.floor(np.arange(count, dtype=np.float32) * scale), grid_size - 1).astype(np.int32)

    return (ladder(count_h)[:, None] * grid_size + ladder(count_w)[None, :]).reshape(-1)


def extract_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """Non-overlapping patches with TF 'SAME' padding (zeros, the extra pixel at the bottom / right):
    [H, W, C] -> ([count_h * count_w, patch * patch * C] in (row, col, channel) order, count_h, count_w)."""
    h, w, c = image.shape
    count_h, count_w = -(-h // patch), -(-w // patch)
    pad_h, pad_w = count_h * patch - h, count_w * patch - w
    padded = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    tiles = padded.reshape(count_h, patch, count_w, patch, c).transpose(0, 2, 1, 3, 4)
    return tiles.reshape(count_h * count_w, patch * patch * c), count_h, count_w


def multiscale_patches(image: np.ndarray, config: MusiqConfig) -> dict[str, np.ndarray]:
    """uint8 RGB [H, W, 3] -> the model inputs: `patches` float32 [L, P*P*3] in [-1, 1], `spatial` int32 [L],
    `scale` int32 [L], `mask` bool [L]. L = sum over resized scales of ceil(long / P)^2 + the native patch count."""
    x = image.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    h, w = x.shape[:2]
    parts = []
    scales = sorted(config.longer_side_lengths)
    for scale_id, longer in enumerate(scales):
        ratio = np.float32(longer) / np.float32(max(h, w))
        rh, rw = int(np.round(np.float32(h) * ratio)), int(np.round(np.float32(w) * ratio))
        parts.append(_tokens(gaussian_resize(x, rh, rw), config, scale_id, int(math.ceil(longer / config.patch_size) ** 2)))
    if config.use_original_resolution:
        parts.append(_tokens(x, config, len(scales), None))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _tokens(image: np.ndarray, config: MusiqConfig, scale_id: int, max_len: int | None) -> dict[str, np.ndarray]:
    patches, count_h, count_w = extract_patches(image, config.patch_size)
    n = patches.shape[0]
    out = {
        "patches": patches,
        "spatial": hashed_positions(config.grid_size, count_h, count_w),
        "scale": np.full((n,), scale_id, np.int32),
        "mask": np.ones((n,), bool),
    }
    if max_len is not None:  # pad with zero tokens (mask 0, position 0, scale 0), then cut, as the official code
        pad = max(max_len - n, 0)
        out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])[:max_len] for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------------------------------------
# The model.


class StdConv(nn.Module):
    """Conv without bias whose kernel is weight-standardised over (kh, kw, in) with eps 1e-5 on the std."""

    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.lecun_normal(), self.kernel + (x.shape[-1], self.features))
        w = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
        return jax.lax.conv_general_dilated(x, w, self.strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class BottleneckUnit(nn.Module):
    """ResNet v1 bottleneck with GroupNorm (eps 1e-4) and a projection shortcut: [N, h, w, c] -> [N, h, w, 4F]."""

    features: int

    @nn.compact
    def __call__(self, x):
        gn = lambda name: nn.GroupNorm(num_groups=32, epsilon=1e-4, name=name)  # noqa: E731
        out = self.features * 4
        residual = gn("gn_proj")(StdConv(out, (1, 1), name="conv_proj")(x)) if x.shape[-1] != out else x
        y = nn.relu(gn("gn1")(StdConv(self.features, (1, 1), name="conv1")(x)))
        y = nn.relu(gn("gn2")(StdConv(self.features, (3, 3), name="conv2")(y)))
        y = gn("gn3")(StdConv(out, (1, 1), name="conv3")(y))
        return nn.relu(residual + y)


class EncoderBlock(nn.Module):
    """Pre-norm transformer layer (tanh-GELU MLP, as flax's old `nn.gelu`): x [B, T, D], mask [B, T] -> [B, T, D]."""

    config: MusiqConfig

    @nn.compact
    def __call__(self, x, mask):
        c = self.config
        head_dim = c.hidden_size // c.num_heads
        h = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")(x)
        attn = _SelfAttention(c.num_heads, head_dim, name="SelfAttention_0")(h, mask)
        x = x + attn
        y = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_1")(x)
        return x + _Mlp(c.mlp_dim, name="MlpBlock_0")(y)


class _SelfAttention(nn.Module):
    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x, mask):
        proj = lambda name: nn.DenseGeneral((self.num_heads, self.head_dim), name=name)(x)  # noqa: E731
        q, k, v = proj("query") / np.sqrt(self.head_dim), proj("key"), proj("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        pair = mask[:, None, :, None] & mask[:, None, None, :]
        weights = jax.nn.softmax(jnp.where(pair, logits, -1e10), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(out)


class _Mlp(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0")(x), approximate=True)
        return nn.Dense(x.shape[-1], name="Dense_1")(y)


class Transformer(nn.Module):
    config: MusiqConfig

    @nn.compact
    def __call__(self, x, spatial, scale, mask):
        c = self.config
        x = x + _Table((1, c.grid_size**2, c.hidden_size), "pos_embedding", name="posembed_input")(spatial)
        x = x + _Table((1, c.num_scales, c.hidden_size), "scale_embedding", name="scaleembed_input")(scale)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c.hidden_size))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, c.hidden_size)), x], axis=1)
        mask = jnp.concatenate([jnp.ones((x.shape[0], 1), bool), mask], axis=1)
        for i in range(c.num_layers):
            x = EncoderBlock(c, name=f"encoderblock_{i}")(x, mask)
        return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)


class _Table(nn.Module):
    """A learned table `[1, N, D]` (official name `param_name`) looked up by integer ids [B, T] -> [B, T, D]."""

    shape: tuple[int, int, int]
    param_name: str

    @nn.compact
    def __call__(self, ids):
        table = self.param(self.param_name, nn.initializers.normal(0.02), self.shape)
        return jnp.take(table[0], ids, axis=0)


class Musiq(nn.Module):
    """patches [B, L, P*P*3], spatial / scale int32 [B, L], mask bool [B, L] -> scores [B, num_classes]."""

    config: MusiqConfig

    @nn.compact
    def __call__(self, patches, spatial, scale, mask):
        c = self.config
        b, length, _ = patches.shape
        x = patches.reshape(b * length, c.patch_size, c.patch_size, 3)
        x = StdConv(c.resnet_width, (7, 7), (2, 2), name="conv_root")(x)
        x = nn.relu(nn.GroupNorm(num_groups=32, epsilon=1e-6, name="gn_root")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = _Stage(c.resnet_width, name="block1")(x)
        x = nn.Dense(c.hidden_size, name="embedding")(x.reshape(b, length, -1))
        x = Transformer(c, name="Transformer")(x, spatial, scale, mask)
        return nn.Dense(c.num_classes, name="head")(x[:, 0])


class _Stage(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return BottleneckUnit(self.features, name="unit1")(x)


def musiq_target_shapes(config: MusiqConfig) -> dict:
    """The parameter tree as ShapeDtypeStructs (nothing allocated)."""
    p = config.patch_size
    args = (jax.ShapeDtypeStruct((1, 4, p * p * 3), jnp.float32), jax.ShapeDtypeStruct((1, 4), jnp.int32),
            jax.ShapeDtypeStruct((1, 4), jnp.int32), jax.ShapeDtypeStruct((1, 4), bool))
    return jax.eval_shape(lambda *a: Musiq(config).init(jax.random.key(0), *a), *args)["params"]


class MusiqScorer:
    """One image -> its mean opinion score (SPAQ: [0, 100]; 10-class heads such as AVA: the expectation over
    classes 1..10). Compiles once per token count (i.e. per image size)."""

    def __init__(self, params, config: MusiqConfig = MusiqConfig()):
        self.config = config
        self.params = params
        self._apply = jax.jit(Musiq(config).apply)

    def __call__(self, image: np.ndarray) -> float:
        tokens = multiscale_patches(image, self.config)
        inputs = (jnp.asarray(tokens[k])[None] for k in ("patches", "spatial", "scale", "mask"))
        logits = np.asarray(self._apply({"params": self.params}, *inputs))[0]
        if logits.shape[-1] == 1:
            return float(logits[0])
        probs = np.exp(logits - logits.max())
        return float((probs / probs.sum() * np.arange(1, logits.shape[-1] + 1)).sum())
