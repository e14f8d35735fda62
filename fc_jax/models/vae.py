"""The Wan2.2 VAE (REFERENCE §2) in flax.linen, channels-last, with an explicit streaming feature cache.

Pixels are `[B, F, H, W, 3]` in [-1, 1]; latents are `[B, f, h, w, 48]` with `f = (F - 1) / 4 + 1`,
`h = H / 16`, `w = W / 16`, normalised per channel by `LATENTS_MEAN` / `LATENTS_STD` (our encode applies
`(mu - mean) / std`, our decode the inverse; diffusers' `AutoencoderKLWan` applies neither).

Architecture (upstream `wan/modules/vae2_2.py`): a 2x2 pixel patchify (12 channels); an encoder of width 160 with
residual down blocks (`AvgDown3D` shortcut), a single-head attention middle block and an L2-normalising "RMS"
norm; a decoder of width 256 with residual up blocks (`DupUp3D` shortcut). Every temporal 3-tap convolution is
causal: its input is preceded by the last 2 input frames of the previous chunk (zeros before the first chunk).

Streaming. Upstream encodes frame 0 alone and then 4 frames at a time, and decodes one latent frame at a time,
keeping a feature cache between calls. Here the cache is the flax collection `"cache"`: one `history` array
`[B, n, h, w, c]` per temporal convolution (its last `n` input frames), wrapped in `VAECache`. The first chunk
follows special rules (frame 0 skips the temporal down/up-sampling convolutions, so it is its own latent frame and
latent frame 0 decodes to exactly one video frame); these rules change output shapes, so whether a chunk is the
first is static (`VAECache.started`, part of the pytree structure, not an array): each chunk function compiles
once for the first chunk and once per later chunk length. Decoding in chunks of 1 + 3 + 3 latents gives the same
frames as decoding all 7 at once.

Public functions (pure, over explicit pytrees): `init_params`, `abstract_params`, `encode_video`,
`encode_image`, `decode`, `init_encode_cache` / `encode_chunk`, `init_decode_cache` / `decode_chunk`, and for
training the differentiable `posterior_moments` (raw mu, log-variance) and `decode_raw` (unclipped).
The architecture is read from the parameter shapes (`VAEArch.from_params`), so these take no config.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

Array = jax.Array
Dtype = Any

# Per-channel latent statistics of the Wan2.2 VAE (official `Wan2_2_VAE`; diffusers config `latents_mean/std`).
LATENTS_MEAN = np.array(
    [-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
     0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
     -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
     -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667],
    dtype=np.float32,
)
LATENTS_STD = np.array(
    [0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
     0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
     0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
     0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744],
    dtype=np.float32,
)


# ----------------------------------------------------------------------------------------------------------------
# Architecture description.


@dataclasses.dataclass(frozen=True)
class VAEArch:
    """Static description of one Wan2.2-style VAE (hashable; the `c.vae` config section plus dtypes).

    `decoder_res_blocks` counts the residual blocks per decoder stage (upstream passes `num_res_blocks=2` and
    builds `num_res_blocks + 1 = 3`).
    """

    z_dim: int = 48
    encoder_dim: int = 160
    decoder_dim: int = 256
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    encoder_res_blocks: int = 2
    decoder_res_blocks: int = 3
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def pixel_channels(self) -> int:
        """Channels after the pixel patchify (3 x patch_size^2)."""
        return 3 * self.patch_size**2

    @property
    def time_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def space_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @classmethod
    def from_config(cls, config) -> "VAEArch":
        """From a full fc_jax config or its `vae` section."""
        c = config.vae if hasattr(config, "vae") else config
        return cls(
            z_dim=int(c.z_dim),
            encoder_dim=int(c.encoder_dim),
            decoder_dim=int(c.decoder_dim),
            dim_mult=tuple(int(m) for m in c.dim_mult),
            encoder_res_blocks=int(c.encoder_res_blocks),
            decoder_res_blocks=int(c.decoder_res_blocks),
            temporal_downsample=tuple(bool(t) for t in c.temporal_downsample),
            patch_size=int(c.patch_size),
            dtype=jnp.dtype(c.dtype),
            param_dtype=jnp.dtype(c.param_dtype),
        )

    @classmethod
    def from_params(cls, params: Mapping, dtype: Dtype | None = None) -> "VAEArch":
        """Read the architecture off the parameter shapes; compute `dtype` defaults to the parameters' dtype."""
        enc, dec = params["encoder"], params["decoder"]
        stages = sum(1 for k in enc if k.startswith("down_blocks_"))
        base = enc["conv_in"]["kernel"].shape[-1]
        widths = [enc[f"down_blocks_{i}"]["resnets_0"]["conv1"]["kernel"].shape[-1] for i in range(stages)]
        dim_mult = tuple(w // base for w in widths)
        param_dtype = jnp.dtype(enc["conv_in"]["kernel"].dtype)
        return cls(
            z_dim=params["post_quant_conv"]["kernel"].shape[-1],
            encoder_dim=base,
            decoder_dim=dec["conv_out"]["kernel"].shape[-2] // dim_mult[0],
            dim_mult=dim_mult,
            encoder_res_blocks=sum(1 for k in enc["down_blocks_0"] if k.startswith("resnets_")),
            decoder_res_blocks=sum(1 for k in dec["up_blocks_0"] if k.startswith("resnets_")),
            temporal_downsample=tuple(
                "time_conv" in enc[f"down_blocks_{i}"]["downsampler"] for i in range(stages - 1)
            ),
            patch_size=int(round((enc["conv_in"]["kernel"].shape[-2] / 3) ** 0.5)),
            dtype=param_dtype if dtype is None else jnp.dtype(dtype),
            param_dtype=param_dtype,
        )


# ----------------------------------------------------------------------------------------------------------------
# Layout helpers (channels-last; the channel orders reproduce upstream's).


def patchify(x: Array, p: int) -> Array:
    """[B, F, H, W, C] -> [B, F, H/p, W/p, C*p*p], channel order (c, w-offset, h-offset) as upstream."""
    b, f, h, w, c = x.shape
    x = x.reshape(b, f, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 2, 4, 6, 5, 3)
    return x.reshape(b, f, h // p, w // p, c * p * p)


def unpatchify(x: Array, p: int) -> Array:
    """Inverse of `patchify`: [B, F, h, w, C*p*p] -> [B, F, h*p, w*p, C]."""
    b, f, h, w, cpp = x.shape
    x = x.reshape(b, f, h, w, cpp // (p * p), p, p)
    x = x.transpose(0, 1, 2, 6, 3, 5, 4)
    return x.reshape(b, f, h * p, w * p, cpp // (p * p))


def avg_down(x: Array, out_dim: int, factor_t: int, factor_s: int) -> Array:
    """Parameter-free `AvgDown3D` shortcut: space/time-to-channel, then mean over channel groups.

    [B, T, H, W, C] -> [B, ceil(T/ft), H/fs, W/fs, out_dim]; T is padded on the left with zeros to a multiple of ft.
    """
    pad_t = (-x.shape[1]) % factor_t
    x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
    x = x.reshape(b, t // factor_t, h // factor_s, w // factor_s, out_dim, -1)
    return x.mean(axis=-1)


def dup_up(x: Array, out_dim: int, factor_t: int, factor_s: int, first: bool) -> Array:
    """Parameter-free `DupUp3D` shortcut: repeat channels, then channel-to-space/time.

    [B, T, H, W, C] -> [B, T*ft, H*fs, W*fs, out_dim]; on the first chunk the first ft-1 frames are dropped.
    """
    b, t, h, w, c = x.shape
    x = jnp.repeat(x, out_dim * factor_t * factor_s * factor_s // c, axis=-1)
    x = x.reshape(b, t, h, w, out_dim, factor_t, factor_s, factor_s)
    x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(b, t * factor_t, h * factor_s, w * factor_s, out_dim)
    return x[:, factor_t - 1 :] if first else x


def _per_frame(fn, x: Array) -> Array:
    """Apply a [N, H, W, C] function to every frame of [B, T, H, W, C]."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


# ----------------------------------------------------------------------------------------------------------------
# Layers.


def _conv_params(module: nn.Module, kernel_size: tuple[int, ...], in_features: int, features: int):
    """Create `module`'s `kernel` [*kernel_size, in_features, features] and `bias` [features] parameters."""
    kernel = module.param(
        "kernel", nn.initializers.lecun_normal(), (*kernel_size, in_features, features), module.param_dtype
    )
    return kernel, module.param("bias", nn.initializers.zeros_init(), (features,), module.param_dtype)


def _conv(x: Array, kernel: Array, bias: Array, strides: tuple[int, ...] | None = None,
          padding: tuple[tuple[int, int], ...] | None = None) -> Array:
    """N-d convolution of channels-last `x` (kernel [*k, Cin, Cout]) with explicit (PyTorch-style) padding.

    On the CPU a 3-d convolution runs as `_conv3d_by_time_taps` (the same values, several times faster there)."""
    nd = kernel.ndim - 2
    strides, padding = strides or (1,) * nd, padding or ((0, 0),) * nd
    if nd == 3 and jax.default_backend() == "cpu":
        return _conv3d_by_time_taps(x, kernel, bias, strides, padding)
    spatial = "DHW"[3 - nd :]
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), window_strides=strides, padding=padding,
                                 dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    return y + bias.astype(x.dtype)


def _conv3d_by_time_taps(x: Array, kernel: Array, bias: Array, strides: tuple[int, ...],
                         padding: tuple[tuple[int, int], ...]) -> Array:
    """A 3-d convolution [B, T, H, W, Cin] (kernel [kt, kh, kw, Cin, Cout]) as the sum over its kt time taps of
    per-frame 2-d convolutions: tap i sees frames i, i + s, i + 2s, ... (s the time stride). XLA's CPU backend
    has a fast 2-d convolution and a slow 3-d one: 2-4x less time for the VAE's layers, forward and backward."""
    (pad_before, pad_after), stride = padding[0], strides[0]
    if pad_before or pad_after:
        x = jnp.pad(x, ((0, 0), (pad_before, pad_after), (0, 0), (0, 0), (0, 0)))
    taps = kernel.shape[0]
    frames_out = (x.shape[1] - taps) // stride + 1
    y = None
    for i in range(taps):
        frames = x[:, i : i + stride * (frames_out - 1) + 1 : stride]
        tap = _per_frame(lambda f: lax.conv_general_dilated(
            f, kernel[i].astype(x.dtype), window_strides=strides[1:], padding=padding[1:],
            dimension_numbers=("NHWC", "HWIO", "NHWC")), frames)
        y = tap if y is None else y + tap
    return y + bias.astype(x.dtype)


class Conv2d(nn.Module):
    """A 2D convolution applied to every frame: [B, T, H, W, Cin] -> [B, T, H', W', features]."""

    features: int
    strides: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel, bias = _conv_params(self, (3, 3), x.shape[-1], self.features)
        x = x.astype(self.dtype)
        return _per_frame(lambda f: _conv(f, kernel, bias, self.strides, self.padding), x)


def _history(module: nn.Module, x: Array, frames: int) -> nn.Variable:
    """`module`'s `cache/history` variable: its last `frames` input frames [B, frames, H, W, C], zeros at first."""
    return module.variable("cache", "history", jnp.zeros, (x.shape[0], frames, *x.shape[2:]), x.dtype)


class CausalConv3d(nn.Module):
    """Conv3d causal in time (upstream `CausalConv3d`): [B, T, H, W, Cin] -> [B, T, H, W, features].

    The input is preceded by the last `kt - 1` input frames of the previous chunk (zeros before the first chunk;
    kept in the `cache` collection); space is padded symmetrically by `k // 2`.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kt, kh, kw = self.kernel_size
        kernel, bias = _conv_params(self, self.kernel_size, x.shape[-1], self.features)
        x = x.astype(self.dtype)
        if kt > 1:
            history = _history(self, x, kt - 1)
            x = jnp.concatenate([history.value, x], axis=1)
            history.value = x[:, -(kt - 1) :]
        return _conv(x, kernel, bias, padding=((0, 0), (kh // 2,) * 2, (kw // 2,) * 2))


class StridedTimeConv(nn.Module):
    """The temporal half of upstream `downsample3d`: a (3, 1, 1) conv of stride 2 in time, no padding.

    First chunk (T odd, frame 0 included): frame 0 passes through unchanged and windows start at frames 0, 2, ...:
    [B, T, H, W, C] -> [B, (T+1)/2, H, W, C]. Later chunks (T even) are preceded by the last input frame of the
    previous chunk: [B, T, ...] -> [B, T/2, ...].
    """

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        kernel, bias = _conv_params(self, (3, 1, 1), x.shape[-1], self.features)
        x = x.astype(self.dtype)
        history = _history(self, x, 1)
        if first:
            y = x if x.shape[1] == 1 else jnp.concatenate([x[:, :1], _conv(x, kernel, bias, (2, 1, 1))], axis=1)
        else:
            y = _conv(jnp.concatenate([history.value, x], axis=1), kernel, bias, (2, 1, 1))
        history.value = x[:, -1:]
        return y


class RMSNorm(nn.Module):
    """Upstream "RMS_norm": L2-normalise over channels, times sqrt(C) and a learned `gamma` [C] (in fp32)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones_init(), (c,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
        y = x32 / jnp.maximum(norm, 1e-12) * (c**0.5) * gamma.astype(jnp.float32)
        return y.astype(self.dtype)


class ResidualBlock(nn.Module):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus a (1x1x1 conv if widths differ) shortcut."""

    out_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        shortcut = x
        if x.shape[-1] != self.out_dim:
            shortcut = CausalConv3d(self.out_dim, (1, 1, 1), name="conv_shortcut", **kw)(x)
        x = CausalConv3d(self.out_dim, name="conv1", **kw)(nn.silu(RMSNorm(name="norm1", **kw)(x)))
        x = CausalConv3d(self.out_dim, name="conv2", **kw)(nn.silu(RMSNorm(name="norm2", **kw)(x)))
        return x + shortcut.astype(self.dtype)


class AttentionBlock(nn.Module):
    """Single-head self-attention within each frame (over its H*W positions), residual."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, t, h, w, c = x.shape
        qkv = nn.Dense(3 * c, name="to_qkv", **kw)(RMSNorm(name="norm", **kw)(x))
        q, k, v = jnp.split(qkv.reshape(b * t, h * w, 1, 3 * c), 3, axis=-1)
        y = jax.nn.dot_product_attention(q, k, v).reshape(b, t, h, w, c)
        return x + nn.Dense(c, name="proj", **kw)(y)


class MidBlock(nn.Module):
    """resnets_0 -> attentions_0 -> resnets_1 at constant width."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        x = ResidualBlock(c, name="resnets_0", **kw)(x)
        x = AttentionBlock(name="attentions_0", **kw)(x)
        return ResidualBlock(c, name="resnets_1", **kw)(x)


class Resample(nn.Module):
    """x2 spatial resampling of upstream `Resample`, with its temporal x2 stage in the `*3d` modes.

    upsample: nearest x2 then a 3x3 conv; [B, T, H, W, C] -> [B, T', 2H, 2W, C] with T' = T (2d), 2T (3d, later
    chunks) or 1 + 2(T-1) (3d, first chunk). downsample: the (0, 1, 0, 1) zero pad then a stride-2 3x3 conv;
    [B, T, H, W, C] -> [B, T', H/2, W/2, C] with T' = T (2d) or as `StridedTimeConv` (3d).
    """

    mode: str  # "upsample2d" | "upsample3d" | "downsample2d" | "downsample3d"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        if self.mode == "upsample3d":
            x = _time_upsample(CausalConv3d(2 * c, (3, 1, 1), name="time_conv", **kw), x, first)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
            return Conv2d(c, name="resample", **kw)(x)
        x = Conv2d(c, strides=(2, 2), padding=((0, 1), (0, 1)), name="resample", **kw)(x)
        if self.mode == "downsample3d":
            x = StridedTimeConv(c, name="time_conv", **kw)(x, first)
        return x


def _time_upsample(time_conv: CausalConv3d, x: Array, first: bool) -> Array:
    """Causal (3, 1, 1) conv to 2C channels, each frame split into two: [B, T, H, W, C] -> [B, 2T, H, W, C].

    Upstream skips this conv for the first chunk's frame 0 (it stays one frame, so the first chunk gives
    1 + 2(T-1) frames) and pads with zeros in its place for the next chunk; zeroing frame 0 of the conv input
    reproduces both for any first-chunk length.
    """
    b, t, h, w, c = x.shape
    y = time_conv(x.at[:, 0].set(0) if first else x)
    y = y.reshape(b, t, h, w, 2, c).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c)
    return jnp.concatenate([x[:, :1].astype(y.dtype), y[:, 2:]], axis=1) if first else y


class DownBlock(nn.Module):
    """Upstream `Down_ResidualBlock`: residual blocks, then an optional `Resample`, plus an `avg_down` shortcut."""

    out_dim: int
    num_res_blocks: int
    temporal: bool
    down: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        shortcut = avg_down(x, self.out_dim, 2 if self.temporal else 1, 2 if self.down else 1)
        for j in range(self.num_res_blocks):
            x = ResidualBlock(self.out_dim, name=f"resnets_{j}", **kw)(x)
        if self.down:
            x = Resample("downsample3d" if self.temporal else "downsample2d", name="downsampler", **kw)(x, first)
        return x + shortcut.astype(self.dtype)


class UpBlock(nn.Module):
    """Upstream `Up_ResidualBlock`: residual blocks, then an optional `Resample` plus a `dup_up` shortcut."""

    out_dim: int
    num_res_blocks: int
    temporal: bool
    up: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x
        for j in range(self.num_res_blocks):
            h = ResidualBlock(self.out_dim, name=f"resnets_{j}", **kw)(h)
        if not self.up:
            return h
        h = Resample("upsample3d" if self.temporal else "upsample2d", name="upsampler", **kw)(h, first)
        return h + dup_up(x, self.out_dim, 2 if self.temporal else 1, 2, first).astype(self.dtype)


class Encoder(nn.Module):
    """Patchified pixels [B, T, H/p, W/p, 3p^2] -> [B, T', H/16, W/16, 2 z_dim] (mu and log-variance)."""

    arch: VAEArch

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        a = self.arch
        kw = dict(dtype=a.dtype, param_dtype=a.param_dtype)
        dims = [a.encoder_dim * m for m in (1, *a.dim_mult)]
        x = CausalConv3d(dims[0], name="conv_in", **kw)(x)
        stages = len(a.dim_mult)
        for i in range(stages):
            last = i == stages - 1
            x = DownBlock(dims[i + 1], a.encoder_res_blocks, temporal=not last and a.temporal_downsample[i],
                          down=not last, name=f"down_blocks_{i}", **kw)(x, first)
        x = MidBlock(name="mid_block", **kw)(x)
        x = nn.silu(RMSNorm(name="norm_out", **kw)(x))
        return CausalConv3d(2 * a.z_dim, name="conv_out", **kw)(x)


class Decoder(nn.Module):
    """Latents [B, t, h, w, z_dim] (after post_quant_conv) -> patchified pixels [B, T, 2h', 2w', 3p^2]."""

    arch: VAEArch

    @nn.compact
    def __call__(self, x: Array, first: bool) -> Array:
        a = self.arch
        kw = dict(dtype=a.dtype, param_dtype=a.param_dtype)
        dims = [a.decoder_dim * m for m in (a.dim_mult[-1], *a.dim_mult[::-1])]
        temporal_upsample = a.temporal_downsample[::-1]
        x = CausalConv3d(dims[0], name="conv_in", **kw)(x)
        x = MidBlock(name="mid_block", **kw)(x)
        stages = len(a.dim_mult)
        for i in range(stages):
            last = i == stages - 1
            x = UpBlock(dims[i + 1], a.decoder_res_blocks, temporal=not last and temporal_upsample[i], up=not last,
                        name=f"up_blocks_{i}", **kw)(x, first)
        x = nn.silu(RMSNorm(name="norm_out", **kw)(x))
        return CausalConv3d(a.pixel_channels, name="conv_out", **kw)(x)


class WanVAE(nn.Module):
    """The whole VAE; `encode` and `decode` work on one chunk (the `cache` collection carries the stream)."""

    arch: VAEArch

    def setup(self):
        a = self.arch
        kw = dict(dtype=a.dtype, param_dtype=a.param_dtype)
        self.encoder = Encoder(a)
        self.quant_conv = CausalConv3d(2 * a.z_dim, (1, 1, 1), **kw)
        self.post_quant_conv = CausalConv3d(a.z_dim, (1, 1, 1), **kw)
        self.decoder = Decoder(a)

    def encode(self, video: Array, first: bool) -> tuple[Array, Array]:
        """Pixels [B, T, H, W, 3] -> raw (un-normalised) mu and log-variance [B, T', H/16, W/16, z_dim], fp32."""
        h = self.quant_conv(self.encoder(patchify(video, self.arch.patch_size), first)).astype(jnp.float32)
        return h[..., : self.arch.z_dim], h[..., self.arch.z_dim :]

    def decode(self, z: Array, first: bool) -> Array:
        """Raw latents [B, t, h, w, z_dim] -> pixels [B, T, 16h, 16w, 3], fp32, not clipped."""
        x = self.decoder(self.post_quant_conv(z), first)
        return unpatchify(x, self.arch.patch_size).astype(jnp.float32)

    def __call__(self, video: Array) -> Array:
        """Encode then decode (used to create every parameter at init)."""
        mu, _ = self.encode(video, True)
        return self.decode(mu, True)


# ----------------------------------------------------------------------------------------------------------------
# Parameters.


def abstract_params(config) -> dict:
    """Shapes and dtypes of the parameters of the VAE of `config` (a full fc_jax config or its `vae` section),
    as ShapeDtypeStructs; nothing is allocated."""
    return _abstract_params(VAEArch.from_config(config))


def _abstract_params(arch: VAEArch) -> dict:
    video = jax.ShapeDtypeStruct((1, 1, arch.space_stride, arch.space_stride, 3), arch.dtype)
    return jax.eval_shape(lambda k, v: WanVAE(arch).init(k, v)["params"], jax.random.key(0), video)


def init_params(config, key: Array) -> dict:
    """Random parameters for the VAE of `config`: kernels ~ N(0, 1/fan_in), biases 0, norm gains 1.

    (Drawn as one flat normal vector rather than through `WanVAE.init`, which takes minutes to compile on CPU.)
    """
    shapes = abstract_params(config)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [int(np.prod(s.shape)) for _, s in paths]
    noise = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    leaves, offset = [], 0
    for (path, s), n in zip(paths, sizes):
        name = path[-1].key
        if name == "kernel":
            value = noise[offset : offset + n].reshape(s.shape) / np.sqrt(np.prod(s.shape[:-1]))
        else:
            value = (np.ones if name == "gamma" else np.zeros)(s.shape, np.float32)
        leaves.append(jnp.asarray(value, s.dtype))
        offset += n
    return jax.tree_util.tree_unflatten(treedef, leaves)


def fold_latent_affine(params, scale, shift) -> dict:
    """`params` changed so that the encoder's raw latents become `scale * mu + shift` (per channel, [z_dim]) and
    the decoder undoes it first: reconstructions are unchanged (exactly, up to rounding), the posterior's
    log-variance moves by 2 log scale. Folded into the 1x1x1 `quant_conv` (its mu half) and `post_quant_conv`."""
    scale, shift = jnp.asarray(scale, jnp.float32), jnp.asarray(shift, jnp.float32)
    z = params["post_quant_conv"]["kernel"].shape[-2]
    if scale.shape != (z,) or shift.shape != (z,):
        raise ValueError(f"fold_latent_affine: scale and shift must be [{z}], found {scale.shape}, {shift.shape}")
    quant, post = dict(params["quant_conv"]), dict(params["post_quant_conv"])
    quant["kernel"] = quant["kernel"].at[..., :z].multiply(scale)
    quant["bias"] = quant["bias"].at[:z].set(quant["bias"][:z] * scale + shift).at[z:].add(2 * jnp.log(scale))
    kernel = post["kernel"] / scale[:, None]  # [1, 1, 1, z_in, z_out]: input channel i scaled by 1 / scale_i
    post["bias"] = post["bias"] - jnp.einsum("i,...io->o", shift, kernel)
    post["kernel"] = kernel
    return {**params, "quant_conv": quant, "post_quant_conv": post}


def match_latent_statistics(params, mean, std) -> dict:
    """`params` whose raw latents, measured here to have per-channel `mean` and `std` ([z_dim]), take the Wan2.2
    statistics (`LATENTS_MEAN`, `LATENTS_STD`) instead, so that `normalize_latents` makes them zero-mean and
    unit-variance as flow matching assumes. For a VAE trained here (the tiny world's): the Wan constants are
    the real VAE's, and every code path keeps using them."""
    scale = LATENTS_STD / np.asarray(std, np.float32)
    return fold_latent_affine(params, scale, LATENTS_MEAN - scale * np.asarray(mean, np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Input checks (errors name what was expected and what was found).


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_pixels(x, arch: VAEArch, what: str) -> None:
    """[B, F, H, W, 3] with H, W divisible by the spatial stride and values in [-1, 1] (checked when concrete)."""
    if x.ndim != 5:
        raise ValueError(f"{what}: expected a video [B, F, H, W, 3], found shape {tuple(x.shape)}")
    if x.shape[-1] != 3:
        raise ValueError(f"{what}: expected 3 colour channels (last axis), found {x.shape[-1]} in {tuple(x.shape)}")
    h, w = x.shape[2:4]
    s = arch.space_stride
    if h % s or w % s:
        raise ValueError(f"{what}: height and width must be divisible by {s}, found {h}x{w}")
    if _is_concrete(x):
        lo, hi = float(jnp.min(x)), float(jnp.max(x))
        if not (-1.0 <= lo and hi <= 1.0):
            raise ValueError(f"{what}: pixel values must lie in [-1, 1], found values in [{lo}, {hi}]")


def _check_frames(num: int, arch: VAEArch, what: str) -> None:
    k = arch.time_stride
    if num % k != 1:
        raise ValueError(f"{what}: the number of frames must be {k}k+1 (1, {k + 1}, {2 * k + 1}, ...), found {num}")


def _check_latents(z, arch: VAEArch, what: str) -> None:
    if z.ndim != 5:
        raise ValueError(f"{what}: expected latents [B, f, h, w, {arch.z_dim}], found shape {tuple(z.shape)}")
    if z.shape[-1] != arch.z_dim:
        raise ValueError(f"{what}: expected {arch.z_dim} latent channels (last axis), found {z.shape[-1]}")


# ----------------------------------------------------------------------------------------------------------------
# Latent normalisation and sampling.


def normalize_latents(mu: Array) -> Array:
    """Raw VAE latents -> the normalised latents the DiT works on: (mu - mean) / std per channel."""
    _check_stats(mu.shape[-1])
    return (mu - LATENTS_MEAN) / LATENTS_STD


def denormalize_latents(z: Array) -> Array:
    """Inverse of `normalize_latents`."""
    _check_stats(z.shape[-1])
    return z * LATENTS_STD + LATENTS_MEAN


def _check_stats(channels: int) -> None:
    if channels != LATENTS_MEAN.shape[0]:
        raise ValueError(f"the Wan2.2 latent statistics have {LATENTS_MEAN.shape[0]} channels, found {channels}")


def _posterior(mu: Array, logvar: Array, key: Array | None) -> Array:
    """mu, or a sample mu + exp(logvar / 2) * eps (logvar clipped to [-30, 20] as upstream) when `key` is given."""
    if key is None:
        return mu
    std = jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))
    return mu + std * jax.random.normal(key, mu.shape, mu.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Whole-video encode / decode.


def _apply(arch: VAEArch, params, history, method, x, first):
    """One chunk through `WanVAE.<method>`; returns (output, new history). `history=None` starts from zeros."""
    variables = {"params": params} if history is None else {"params": params, "cache": history}
    out, state = WanVAE(arch).apply(variables, x, first, method=method, mutable=["cache"])
    return out, state["cache"]


def _chunks(x: Array, size: int) -> Array:
    """[B, n*size, ...] -> [n, B, size, ...] (scan over the leading axis)."""
    b, t = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, t // size, size, *x.shape[2:]), 1, 0)


def _unchunk(x: Array) -> Array:
    """[n, B, size, ...] -> [B, n*size, ...]."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def posterior_moments(params, video: Array, dtype: Dtype | None = None, one_pass: bool = False
                      ) -> tuple[Array, Array]:
    """Pixels [B, 4k+1, H, W, 3] in [-1, 1] -> the raw (un-normalised) posterior mean and log-variance
    [B, k+1, H/16, W/16, z_dim], as `encode_video` computes them (frame 0 alone, then 4 frames at a time). A pure,
    differentiable function (VAE training); not checked, not jitted. `one_pass=True` runs the clip as one first
    chunk instead: the same values (the encoder is causal), several times faster to differentiate on a CPU, all
    frames' activations in memory at once."""
    arch = VAEArch.from_params(params, dtype)
    if one_pass:
        return _apply(arch, params, None, WanVAE.encode, video, True)[0]
    (mu, logvar), history = _apply(arch, params, None, WanVAE.encode, video[:, :1], True)
    if video.shape[1] > 1:

        def step(history, frames):
            (mu, logvar), history = _apply(arch, params, history, WanVAE.encode, frames, False)
            return history, (mu, logvar)

        _, (mus, logvars) = lax.scan(step, history, _chunks(video[:, 1:], arch.time_stride))
        mu = jnp.concatenate([mu, _unchunk(mus)], axis=1)
        logvar = jnp.concatenate([logvar, _unchunk(logvars)], axis=1)
    return mu, logvar


def _encode_video(params, video, key, dtype):
    return normalize_latents(_posterior(*posterior_moments(params, video, dtype), key))


_encode_video_jit = jax.jit(_encode_video, static_argnames=("dtype",))


def encode_video(params, video: Array, key: Array | None = None, dtype: Dtype | None = None) -> Array:
    """Encode a video [B, 4k+1, H, W, 3] in [-1, 1] to normalised latents [B, k+1, H/16, W/16, 48].

    Returns the posterior mean, or a posterior sample when `key` is given. Runs as upstream: frame 0 alone, then
    4 frames at a time (a `lax.scan` carrying the feature cache). `dtype` is the compute dtype (default: the
    parameters'). The value range is checked only on concrete inputs (not while being traced under `jax.jit`).
    """
    arch = VAEArch.from_params(params, dtype)
    _check_pixels(video, arch, "encode_video")
    _check_frames(video.shape[1], arch, "encode_video")
    return _encode_video_jit(params, video, key, dtype=dtype)


def encode_image(params, image: Array, key: Array | None = None, dtype: Dtype | None = None) -> Array:
    """Encode images [B, H, W, 3] in [-1, 1] as 1-frame videos: normalised latents [B, 1, H/16, W/16, 48]."""
    if image.ndim != 4:
        raise ValueError(f"encode_image: expected images [B, H, W, 3], found shape {tuple(image.shape)}")
    return encode_video(params, image[:, None], key, dtype)


def decode_raw(params, z: Array, dtype: Dtype | None = None, one_pass: bool = False) -> Array:
    """Raw (un-normalised) latents [B, f, h, w, z_dim] -> pixels [B, 4(f-1)+1, 16h, 16w, 3], NOT clipped, as
    `decode` computes them (one latent frame at a time). A pure, differentiable function (VAE training).
    `one_pass=True` decodes all latent frames as one first chunk: the same frames, faster to differentiate."""
    arch = VAEArch.from_params(params, dtype)
    if one_pass:
        return _apply(arch, params, None, WanVAE.decode, z, True)[0]
    frames, history = _apply(arch, params, None, WanVAE.decode, z[:, :1], True)
    if z.shape[1] > 1:

        def step(history, z_t):
            frames, history = _apply(arch, params, history, WanVAE.decode, z_t, False)
            return history, frames

        _, rest = lax.scan(step, history, _chunks(z[:, 1:], 1))
        frames = jnp.concatenate([frames, _unchunk(rest)], axis=1)
    return frames


def _decode(params, latents, dtype):
    return jnp.clip(decode_raw(params, denormalize_latents(latents), dtype), -1.0, 1.0)


_decode_jit = jax.jit(_decode, static_argnames=("dtype",))


def decode(params, latents: Array, dtype: Dtype | None = None) -> Array:
    """Decode normalised latents [B, f, h, w, 48] to a video [B, 4(f-1)+1, 16h, 16w, 3], clipped to [-1, 1].

    Runs as upstream: one latent frame at a time (a `lax.scan` carrying the feature cache); the output is
    clipped to [-1, 1] as upstream's decode does. `dtype` is the compute dtype (default: the parameters').
    """
    _check_latents(latents, VAEArch.from_params(params, dtype), "decode")
    return _decode_jit(params, latents, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------
# Streaming.


@struct.dataclass
class VAECache:
    """Streaming state of the encoder or the decoder.

    history: the `cache` collection, a tree mirroring the parameters with one `history` array [B, n, h, w, c]
        per temporal convolution (its last n = 2 input frames; 1 for the stride-2 temporal downsampling conv).
    started: False until the first chunk has been processed. Static (part of the tree structure), because the
        first chunk's rules change the output length.
    """

    history: Any
    started: bool = struct.field(pytree_node=False, default=False)


@functools.lru_cache(maxsize=64)
def _history_shapes(arch: VAEArch, method, x_shape: tuple[int, ...]) -> Any:
    """ShapeDtypeStructs of the `cache` collection after `method` runs on a first chunk of shape `x_shape`
    (traced once per architecture, method and shape: tracing the VAE takes ~0.2 s on the CPU, and every stream
    start asks for a fresh cache)."""
    params = _abstract_params(arch)
    x = jax.ShapeDtypeStruct(x_shape, arch.dtype)
    return jax.eval_shape(lambda p, x: _apply(arch, p, None, method, x, True)[1], params, x)


def _zero_history(arch: VAEArch, method, x_shape: tuple[int, ...]) -> Any:
    """Zeros shaped like the `cache` collection after `method` runs on a first chunk of shape `x_shape`."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _history_shapes(arch, method, tuple(x_shape)))


def init_decode_cache(config, batch: int, latent_h: int, latent_w: int) -> VAECache:
    """An empty decoder cache (zeros, `started=False`) in the config's compute dtype; static shapes. `config`:
    an fc_jax config, its `vae` section or a `VAEArch` (e.g. `VAEArch.from_params(params)`)."""
    arch = config if isinstance(config, VAEArch) else VAEArch.from_config(config)
    return VAECache(_zero_history(arch, WanVAE.decode, (batch, 1, latent_h, latent_w, arch.z_dim)))


def init_encode_cache(config, batch: int, height: int, width: int) -> VAECache:
    """An empty encoder cache for videos of `height` x `width` pixels, in the config's compute dtype."""
    arch = VAEArch.from_config(config)
    return VAECache(_zero_history(arch, WanVAE.encode, (batch, 1, height, width, 3)))


def _cache_dtype(cache: VAECache) -> Dtype:
    return jax.tree.leaves(cache.history)[0].dtype


def _check_cache_fits(found: tuple[int, ...], want: tuple[int, ...], what: str) -> None:
    if found != want:
        raise ValueError(f"{what}: the cache was made for (batch, height, width) = {want}, found {found}")


def _decode_chunk(params, cache: VAECache, latents):
    arch = VAEArch.from_params(params, _cache_dtype(cache))
    frames, history = _apply(arch, params, cache.history, WanVAE.decode, denormalize_latents(latents),
                             not cache.started)
    return jnp.clip(frames, -1.0, 1.0), VAECache(history, started=True)


_decode_chunk_jit = jax.jit(_decode_chunk, donate_argnums=1)


def decode_chunk(params, cache: VAECache, latents: Array) -> tuple[Array, VAECache]:
    """Decode the next chunk of normalised latents [B, t, h, w, 48]; returns (frames, new cache).

    The first chunk gives 4(t-1)+1 frames (latent frame 0 decodes to one frame), later chunks 4t. Compiles once
    per (first or not, t). The cache is donated: use the returned one. Frames are clipped to [-1, 1].
    """
    arch = VAEArch.from_params(params, _cache_dtype(cache))
    _check_latents(latents, arch, "decode_chunk")
    b, _, h, w, _ = cache.history["decoder"]["conv_in"]["history"].shape
    _check_cache_fits((latents.shape[0], *latents.shape[2:4]), (b, h, w), "decode_chunk")
    return _decode_chunk_jit(params, cache, latents)


def _encode_chunk(params, cache: VAECache, video, key):
    arch = VAEArch.from_params(params, _cache_dtype(cache))
    (mu, logvar), history = _apply(arch, params, cache.history, WanVAE.encode, video, not cache.started)
    return normalize_latents(_posterior(mu, logvar, key)), VAECache(history, started=True)


_encode_chunk_jit = jax.jit(_encode_chunk, donate_argnums=1)


def encode_chunk(params, cache: VAECache, video: Array, key: Array | None = None) -> tuple[Array, VAECache]:
    """Encode the next frames [B, n, H, W, 3] in [-1, 1]; returns (normalised latents [B, n', H/16, W/16, 48], cache).

    The first chunk holds frame 0 and a multiple of 4 more (n = 4k+1 -> k+1 latents; upstream uses n = 1); later
    chunks hold a multiple of 4 frames (n = 4k -> k latents). Encoding frame 0, then 4 frames at a time, equals
    `encode_video`. The cache is donated: use the returned one. Values are checked only on concrete inputs.
    """
    arch = VAEArch.from_params(params, _cache_dtype(cache))
    _check_pixels(video, arch, "encode_chunk")
    k, n = arch.time_stride, video.shape[1]
    if not cache.started:
        _check_frames(n, arch, "encode_chunk (first chunk)")
    elif n == 0 or n % k:
        raise ValueError(f"encode_chunk: chunks after the first must hold a multiple of {k} frames, found {n}")
    b, _, h, w, _ = cache.history["encoder"]["conv_in"]["history"].shape
    p = arch.patch_size
    _check_cache_fits((video.shape[0], *video.shape[2:4]), (b, h * p, w * p), "encode_chunk")
    return _encode_chunk_jit(params, cache, video, key)
