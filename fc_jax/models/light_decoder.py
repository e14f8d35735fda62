"""A light, causal, streaming decoder for the Wan2.2 latent format (issue "a light streaming decoder").

Normalised latents [B, f, h, w, 48] (the DiT's, what `vae.decode` takes) -> frames [B, F, 16h, 16w, 3] in
[-1, 1], with the VAE decoder's frame rule: the first latent frame of a stream gives 1 frame, every later one 4.
It costs a small fraction of the VAE decoder: all temporal mixing happens at the latent resolution, and the
pixels come from a depth-to-space of the last stage, so no convolution runs at full resolution.

    latents --conv 3x3--> C --memory blocks (x `blocks`)--> C --1x1 to 4C, one C-map per output frame-->
    per frame: (nearest x2, conv 3x3, SiLU) x 3 through `up_widths` --conv 3x3 to 3*2*2--> depth-to-space x2

A memory block sees each latent frame beside the previous one: y = x + conv(SiLU(conv([x_t, x_{t-1}]))). Its
streaming state is the last latent frame of its input ([B, 1, h, w, C] per block; zeros before the stream's
first frame), so a chunk after a chunk equals the whole sequence decoded at once, and the state is an explicit
pytree (`LightDecoderState`) with static shapes: one compile for the first chunk and one for every later one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

Z_DIM = 48  # the Wan2.2 latent channels
TIME_STRIDE = 4  # output frames per latent frame after the first
SPACE_STRIDE = 16  # output pixels per latent position, each way


@dataclasses.dataclass(frozen=True)
class LightDecoderArch:
    """Static description of a light decoder (the `light_decoder` config section): `width` channels at the
    latent resolution through `blocks` memory blocks, then three x2 stages of `up_widths` channels and a x2
    depth-to-space (16x in all)."""

    width: int = 64
    blocks: int = 3
    up_widths: tuple[int, int, int] = (48, 32, 24)
    dtype: Any = jnp.float32

    @classmethod
    def from_config(cls, config) -> "LightDecoderArch":
        c = config.light_decoder if hasattr(config, "light_decoder") else config
        up = tuple(int(u) for u in c.up_widths)
        if len(up) != 3:
            raise ValueError(f"light_decoder.up_widths: expected 3 widths (the x2, x4 and x8 stages), found {up}")
        if int(c.blocks) < 1:
            raise ValueError(f"light_decoder.blocks: expected at least 1 memory block, found {c.blocks}")
        return cls(width=int(c.width), blocks=int(c.blocks), up_widths=up, dtype=jnp.dtype(c.dtype))

    @classmethod
    def from_params(cls, params: Mapping, dtype=None) -> "LightDecoderArch":
        """Read the architecture off the parameter shapes."""
        blocks = sum(1 for k in params if k.startswith("memory_"))
        up = tuple(params[f"up_{i}"]["kernel"].shape[-1] for i in range(3))
        kernel = params["conv_in"]["kernel"]
        return cls(width=kernel.shape[-1], blocks=blocks, up_widths=up,
                   dtype=jnp.dtype(kernel.dtype if dtype is None else dtype))


@struct.dataclass
class LightDecoderState:
    """Streaming state: `memory`, one [B, 1, h, w, width] array per memory block (the last latent frame of its
    input; zeros before the stream starts); `started` (static) is False until the first chunk is decoded."""

    memory: tuple
    started: bool = struct.field(pytree_node=False, default=False)


def _conv(features: int, kernel: int, name: str, dtype) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), name=name, dtype=dtype)


def _per_frame(fn, x: Array) -> Array:
    """Apply a [N, H, W, C] function to every frame of [B, T, H, W, C]."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


def depth_to_space(x: Array, p: int) -> Array:
    """[..., H, W, p*p*C] (channels ordered (p_h, p_w, C)) -> [..., H*p, W*p, C]."""
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h, w, p, p, c // (p * p))
    x = jnp.moveaxis(x, -3, -4)  # [..., h, w, p_h, p_w, c] -> [..., h, p_h, w, p_w, c]
    return x.reshape(*lead, h * p, w * p, c // (p * p))


class MemoryBlock(nn.Module):
    """x [B, t, h, w, C] and `memory` [B, 1, h, w, C] (the frame before x[:, 0]) -> (y, x[:, -1:])."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, memory: Array) -> tuple[Array, Array]:
        c = x.shape[-1]
        previous = jnp.concatenate([memory.astype(x.dtype), x[:, :-1]], axis=1)
        h = _per_frame(_conv(c, 3, "conv1", self.dtype), jnp.concatenate([x, previous], axis=-1))
        h = _per_frame(_conv(c, 3, "conv2", self.dtype), nn.silu(h))
        return x + h, x[:, -1:]


class LightDecoder(nn.Module):
    """Latents [B, t, h, w, 48] and the memory tuple -> (frames [B, T, 16h, 16w, 3] unclipped, new memory);
    T = 4t, or 4(t-1)+1 when `first` (the stream's first latent frame gives one frame)."""

    arch: LightDecoderArch

    @nn.compact
    def __call__(self, z: Array, memory: tuple, first: bool) -> tuple[Array, tuple]:
        a = self.arch
        x = nn.silu(_per_frame(_conv(a.width, 3, "conv_in", a.dtype), z.astype(a.dtype)))
        new_memory = []
        for i in range(a.blocks):
            x, m = MemoryBlock(a.dtype, name=f"memory_{i}")(x, memory[i])
            new_memory.append(m)
        b, t, h, w, c = x.shape
        x = nn.Dense(TIME_STRIDE * c, name="to_frames", dtype=a.dtype)(nn.silu(x))
        x = jnp.moveaxis(x.reshape(b, t, h, w, TIME_STRIDE, c), 4, 2).reshape(b, TIME_STRIDE * t, h, w, c)
        if first:  # latent frame 0 -> its first sub-frame only
            x = jnp.concatenate([x[:, :1], x[:, TIME_STRIDE:]], axis=1)

        def upsample(f):
            for i, features in enumerate(a.up_widths):
                f = jnp.repeat(jnp.repeat(f, 2, axis=1), 2, axis=2)
                f = nn.silu(_conv(features, 3, f"up_{i}", a.dtype)(f))
            return depth_to_space(_conv(3 * 4, 3, "conv_out", a.dtype)(f), 2)

        return _per_frame(upsample, x).astype(jnp.float32), tuple(new_memory)


def _zero_memory(arch: LightDecoderArch, batch: int, h: int, w: int) -> tuple:
    return tuple(jnp.zeros((batch, 1, h, w, arch.width), arch.dtype) for _ in range(arch.blocks))


def init_params(config, key: Array) -> dict:
    """Fresh parameters of the light decoder of `config` (its `light_decoder` section, or a `LightDecoderArch`)."""
    arch = config if isinstance(config, LightDecoderArch) else LightDecoderArch.from_config(config)
    z = jnp.zeros((1, 2, 2, 2, Z_DIM), arch.dtype)
    return LightDecoder(arch).init(key, z, _zero_memory(arch, 1, 2, 2), True)["params"]


def _check_latents(z, what: str) -> None:
    if getattr(z, "ndim", None) != 5 or z.shape[-1] != Z_DIM:
        raise ValueError(f"{what}: expected latents [B, f, h, w, {Z_DIM}], found shape {tuple(getattr(z, 'shape', ()))}")
    if z.shape[1] < 1:
        raise ValueError(f"{what}: expected at least one latent frame, found {z.shape[1]}")


def decode_raw(params, z: Array, dtype=None) -> Array:
    """The whole sequence of normalised latents [B, f, h, w, 48] -> frames [B, 4(f-1)+1, 16h, 16w, 3], not
    clipped (training); pure, differentiable, the values streaming gives."""
    arch = LightDecoderArch.from_params(params, dtype)
    frames, _ = LightDecoder(arch).apply({"params": params}, z, _zero_memory(arch, z.shape[0], *z.shape[2:4]), True)
    return frames


@jax.jit
def _decode(params, z):
    return jnp.clip(decode_raw(params, z), -1.0, 1.0)


def decode(params, latents: Array) -> Array:
    """Decode a whole sequence of normalised latents [B, f, h, w, 48] to frames [B, 4(f-1)+1, 16h, 16w, 3] in
    [-1, 1], as `vae.decode` does."""
    _check_latents(latents, "light_decoder.decode")
    return _decode(params, latents)


def init_state(params, batch: int, latent_h: int, latent_w: int) -> LightDecoderState:
    """An empty streaming state (zeros, `started=False`) for latents of `latent_h` x `latent_w`."""
    return LightDecoderState(_zero_memory(LightDecoderArch.from_params(params), batch, latent_h, latent_w))


def _decode_chunk(params, state: LightDecoderState, z):
    arch = LightDecoderArch.from_params(params, state.memory[0].dtype if state.memory else None)
    frames, memory = LightDecoder(arch).apply({"params": params}, z, state.memory, not state.started)
    return jnp.clip(frames, -1.0, 1.0), LightDecoderState(memory, started=True)


_decode_chunk_jit = jax.jit(_decode_chunk, donate_argnums=1)


def decode_chunk(params, state: LightDecoderState, latents: Array) -> tuple[Array, LightDecoderState]:
    """Decode the next chunk of normalised latents [B, t, h, w, 48]; returns (frames in [-1, 1], new state).

    The first chunk gives 4(t-1)+1 frames, later ones 4t; the chunks' frames joined equal `decode` of the joined
    latents. Compiles once per (first or not, t). The state is donated: use the returned one."""
    _check_latents(latents, "light_decoder.decode_chunk")
    want = state.memory[0].shape
    if (latents.shape[0], *latents.shape[2:4]) != (want[0], *want[2:4]):
        raise ValueError(f"light_decoder.decode_chunk: the state was made for (batch, h, w) = "
                         f"{(want[0], *want[2:4])}, found latents of shape {tuple(latents.shape)}")
    return _decode_chunk_jit(params, state, latents)
