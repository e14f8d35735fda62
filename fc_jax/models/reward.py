"""The aesthetic reward model (REFERENCE §5): CLIP ViT-L/14 image embedding -> LAION "improved aesthetic predictor".

    frames [N, H, W, 3] -> clip_preprocess (uint8 steps as the authors and PIL, 224 bicubic resize of the short
      side, centre crop, CLIP mean/std)
      -> CLIPVision: patch conv (no bias) + class token + learned positions, pre-LN, pre-norm transformer
         blocks (quick-GELU MLP), post-LN of the class token, visual projection (no bias)
      -> L2 normalise -> MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (no activations; dropout is a no-op at inference)
      -> reward [N]

The same numbers as transformers `CLIPVisionModelWithProjection` + the LAION head. The transformer blocks are
stacked with `nn.scan` (leading `layers` axis). Everything runs in float32 unless `dtype` says otherwise.

Two forms of the same scorer: `aesthetic_scores(config)` is the pure `(params, frames) -> [N]` function the
distillation traces into its compiled step (GR-DMD reweighting; the parameters stay an argument), and
`FrameReward`, what the evaluation uses, is any callable mapping frames in [-1, 1] `[N, H, W, 3]` to one score
per frame `[N]` (`aesthetic_frame_reward` binds the parameters to the jitted pure function).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The vision tower's geometry; the defaults are CLIP ViT-L/14 at 224 px (303,966,208 parameters)."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    projection_dim: int = 768
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


AESTHETIC_WIDTHS = (1024, 128, 64, 16, 1)
# LAION head: nn.Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear) -> linears at these indices.
AESTHETIC_LAYER_INDICES = (0, 2, 4, 6, 7)


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


class CLIPBlock(nn.Module):
    """One pre-norm CLIP encoder layer as an `nn.scan` body: x [B, T, D] -> (x, None)."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, x, _):
        c = self.config
        head_dim = c.hidden_size // c.num_heads
        dense = lambda n, name: nn.Dense(n, dtype=c.dtype, name=name)  # noqa: E731
        h = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=jnp.float32, name="layer_norm1")(x)
        b, t, _ = h.shape
        split = lambda y: y.reshape(b, t, c.num_heads, head_dim)  # noqa: E731
        q = split(dense(c.hidden_size, "q_proj")(h)) * head_dim**-0.5
        k = split(dense(c.hidden_size, "k_proj")(h))
        v = split(dense(c.hidden_size, "v_proj")(h))
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32), axis=-1)
        attn = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).reshape(b, t, c.hidden_size)
        x = x + dense(c.hidden_size, "out_proj")(attn)
        h = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=jnp.float32, name="layer_norm2")(x)
        h = dense(c.hidden_size, "fc2")(quick_gelu(dense(c.intermediate_size, "fc1")(h)))
        return x + h, None


class CLIPVision(nn.Module):
    """CLIP vision tower + visual projection: normalised pixels [B, S, S, 3] (S = image_size) -> embeds [B, P]."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        c = self.config
        p = c.patch_size
        if pixels.shape[1:] != (c.image_size, c.image_size, 3):
            raise ValueError(f"CLIPVision expects pixels [B, {c.image_size}, {c.image_size}, 3], got {pixels.shape}")
        x = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=c.dtype,
                    name="patch_embedding")(pixels.astype(c.dtype))
        x = x.reshape(x.shape[0], -1, c.hidden_size)
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
        pos = self.param("position_embedding", nn.initializers.normal(0.02), (c.num_positions, c.hidden_size))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, c.hidden_size)), x], axis=1)
        x = x + pos.astype(x.dtype)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=jnp.float32, name="pre_layrnorm")(x)
        blocks = nn.scan(CLIPBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=c.num_layers)
        x, _ = blocks(c, name="layers")(x, None)
        pooled = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=jnp.float32, name="post_layernorm")(x[:, 0])
        return nn.Dense(c.projection_dim, use_bias=False, dtype=c.dtype, name="visual_projection")(pooled)


class AestheticHead(nn.Module):
    """LAION improved-aesthetic-predictor MLP: embeds [B, 768] -> scores [B] (linear layers only)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width, index in zip(AESTHETIC_WIDTHS, AESTHETIC_LAYER_INDICES):
            x = nn.Dense(width, name=f"layers_{index}")(x)
        return x[..., 0]


class AestheticReward(nn.Module):
    """CLIP embedding, L2-normalised, into the aesthetic head: normalised pixels [B, S, S, 3] -> rewards [B]."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        embeds = CLIPVision(self.config, name="clip")(pixels).astype(jnp.float32)
        embeds = embeds / jnp.linalg.norm(embeds, axis=-1, keepdims=True)
        return AestheticHead(name="head")(embeds)


def clip_preprocess(images: jax.Array, image_size: int = 224, quantize: bool = True) -> jax.Array:
    """HF CLIPImageProcessor (its PIL path) in JAX: images [N, H, W, 3] in [0, 1] -> [N, S, S, 3] normalised.

    Bicubic resize so the short side is `image_size` (long side `int(S * long / short)`, as transformers computes
    it; antialiased when shrinking), width first then height as PIL resamples, centre crop to S x S, then
    `(x - CLIP_MEAN) / CLIP_STD`. `quantize` (the authors' reward path, `models/gr_dmd_ic.py`: decoded frames
    rounded to uint8 before `CLIPProcessor`, whose PIL resize keeps uint8 after each pass): the images are rounded
    to 1/255 steps before and after each pass. Then it differs from transformers only by PIL's fixed-point
    weights: one uint8 step on under 0.1% of the pixels (`tests/test_authors_alignment.py`). Without `quantize`,
    float throughout.
    """
    n, h, w, ch = images.shape
    if ch != 3:
        raise ValueError(f"clip_preprocess expects RGB images [N, H, W, 3], got {images.shape}")
    steps = (lambda x: jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0) if quantize else (lambda x: x)
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(image_size * long / short)
    new_h, new_w = (image_size, new_long) if h <= w else (new_long, image_size)
    x = steps(images.astype(jnp.float32))
    x = steps(jax.image.resize(x, (n, h, new_w, 3), method="bicubic", antialias=True))
    x = steps(jax.image.resize(x, (n, new_h, new_w, 3), method="bicubic", antialias=True))
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[:, top : top + image_size, left : left + image_size]
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


class FrameReward(Protocol):
    """Scores frames: `[N, H, W, 3]` in [-1, 1] (the VAE's pixel range) -> `[N]` float32, higher is better."""

    def __call__(self, frames: jax.Array) -> jax.Array: ...


def aesthetic_scores(config: CLIPVisionConfig = CLIPVisionConfig()):
    """The pure scorer `(params, frames [N, H, W, 3] in [-1, 1]) -> [N]`; params = {"clip": ..., "head": ...}."""
    model = AestheticReward(config)

    def scores(params, frames: jax.Array) -> jax.Array:
        pixels = clip_preprocess((frames.astype(jnp.float32) + 1.0) / 2.0, config.image_size)
        return model.apply({"params": params}, pixels)

    return scores


def aesthetic_frame_reward(params: Any, config: CLIPVisionConfig = CLIPVisionConfig()) -> FrameReward:
    """The LAION aesthetic reward as a `FrameReward` (jit-compiled; `params` = {"clip": ..., "head": ...})."""
    scores = jax.jit(aesthetic_scores(config))
    return lambda frames: scores(params, frames)  # params as an argument, not baked into the compiled program


def reward_target_shapes(config: CLIPVisionConfig) -> dict:
    """The reward model's parameter tree as ShapeDtypeStructs (nothing allocated)."""
    pixels = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: AestheticReward(config).init(jax.random.key(0), x), pixels)["params"]


def palette_purity_scores(params: dict, frames: jax.Array) -> jax.Array:
    """Rendering purity of `frames` float [N, H, W, 3] in [-1, 1] -> float32 [N] in [0, 1], differentiable: the
    mean over pixels of a soft-OR over a palette of exp(-d^2 / (2 sigma^2)), 1 - prod_k (1 - exp(...)), d the
    RGB distance (0..255 units) to each palette point and each colour segment (a gradient's run of colours).
    `params`: {"points" [P, 3], "segments" [S, 2, 3] (start and end colours), "sigma" []} (e.g. the tiny world's
    VQ palette, `fc_jax.tinyworld.metrics.vq_palette_params`)."""
    points, segments = jnp.asarray(params["points"]), jnp.asarray(params["segments"])
    a, ab = segments[:, 0], segments[:, 1] - segments[:, 0]
    px = (jnp.asarray(frames, jnp.float32) + 1.0) * 127.5
    d2p = jnp.sum((px[..., None, :] - points) ** 2, -1)
    t = jnp.clip(jnp.sum((px[..., None, :] - a) * ab, -1) / jnp.sum(ab * ab, -1), 0, 1)
    d2s = jnp.sum((px[..., None, :] - a - t[..., None] * ab) ** 2, -1)
    near = jnp.exp(-jnp.concatenate([d2p, d2s], -1) / (2 * jnp.square(params["sigma"])))
    purity = 1 - jnp.exp(jnp.sum(jnp.log(jnp.clip(1 - near, 1e-6, 1)), -1))
    return jnp.mean(purity, axis=(-2, -1))
