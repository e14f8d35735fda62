"""3D rotary position embedding of Wan2.x (REFERENCE §1).

The head dimension is split into (frame, height, width) parts: for head_dim 128 that is 44 / 42 / 42 channels
(`h = w = 2·(head_dim // 6)`, frame takes the rest). Each axis has its own frequency ladder
`θ^(-2i/d_axis)`, and rotations act on interleaved channel pairs (x0, x1), (x2, x3), ... — not rotate-half.

Angles are tabulated once in float64 (as upstream) for `max_positions` integer positions per axis and gathered
by position, so positions can be traced arrays (the streaming student's absolute frame index) while the table
stays a constant.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels given to the (frame, height, width) axes: (44, 42, 42) for head_dim 128."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


@functools.lru_cache(maxsize=16)
def rope_tables(head_dim: int, max_positions: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables, each [3, max_positions, head_dim // 2] (axis, position, pair); unused pairs of an
    axis are zero and are masked out when the three axes are combined in `rope_cos_sin`."""
    half = head_dim // 2
    cos = np.zeros((3, max_positions, half), np.float64)
    sin = np.zeros((3, max_positions, half), np.float64)
    start = 0
    pos = np.arange(max_positions, dtype=np.float64)
    for axis, dim in enumerate(axis_dims(head_dim)):
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles = np.outer(pos, freqs)
        cos[axis, :, start : start + dim // 2] = np.cos(angles)
        sin[axis, :, start : start + dim // 2] = np.sin(angles)
        start += dim // 2
    return cos.astype(np.float32), sin.astype(np.float32)


def grid_positions(frame_positions, height: int, width: int):
    """Token positions [F·H·W, 3] (frame, row, column) for a latent grid, frames in the given RoPE frame order.

    frame_positions: [F] integers (may be a traced array), e.g. [0, 1, 2, ..., F-1] or, in-context, the video
    frames starting at 2.
    """
    frame_positions = jnp.asarray(frame_positions, jnp.int32)
    f = frame_positions.shape[0]
    fi = jnp.broadcast_to(frame_positions[:, None, None], (f, height, width))
    hi = jnp.broadcast_to(jnp.arange(height, dtype=jnp.int32)[None, :, None], (f, height, width))
    wi = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32)[None, None, :], (f, height, width))
    return jnp.stack([fi, hi, wi], axis=-1).reshape(f * height * width, 3)


def rope_cos_sin(positions, head_dim: int, max_positions: int = 1024, theta: float = 10000.0):
    """cos, sin of shape [L, head_dim // 2] for token positions [L, 3]."""
    cos_t, sin_t = rope_tables(head_dim, max_positions, theta)
    positions = jnp.asarray(positions, jnp.int32)
    cos = sum(jnp.asarray(cos_t[a])[positions[:, a]] for a in range(3))
    sin = sum(jnp.asarray(sin_t[a])[positions[:, a]] for a in range(3))
    return cos, sin


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs of x [B, L, N, D] by angles with cos/sin [L, D/2] (or [B, L, D/2]); fp32 math."""
    dtype = x.dtype
    x = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    if cos.ndim == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x0, x1 = x[..., 0], x[..., 1]
    out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    return out.reshape(*out.shape[:-2], -1).astype(dtype)


_SHIFT_DIGIT_BITS, _SHIFT_DIGITS = 8, 4  # |offset| < 2**31 as four base-256 digits


@functools.lru_cache(maxsize=16)
def _frame_shift_tables(head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [digits, 256, head_dim // 2]: the rotation of each channel pair by d · 256^i frames
    (digit value d at digit i); the frame-axis pairs turn, the height and width pairs do not (cos 1, sin 0)."""
    half, frame_dim = head_dim // 2, axis_dims(head_dim)[0]
    freqs = 1.0 / theta ** (np.arange(0, frame_dim, 2, dtype=np.float64) / frame_dim)
    base = 1 << _SHIFT_DIGIT_BITS
    cos = np.ones((_SHIFT_DIGITS, base, half), np.float64)
    sin = np.zeros((_SHIFT_DIGITS, base, half), np.float64)
    for digit in range(_SHIFT_DIGITS):
        angles = np.mod(np.outer(np.arange(base, dtype=np.float64) * float(base**digit), freqs), 2 * np.pi)
        cos[digit, :, : frame_dim // 2] = np.cos(angles)
        sin[digit, :, : frame_dim // 2] = np.sin(angles)
    return cos.astype(np.float32), sin.astype(np.float32)


def shift_frames(x, offset, theta: float = 10000.0):
    """Move RoPE-rotated vectors x [..., T, N, head_dim] (keys as the cache stores them) `offset` frames along the
    frame axis: the frame-axis channel pairs turn by offset · ω, height and width pairs stay. `offset`: an int32
    scalar (may be traced), |offset| < 2**31; 0 is the identity, bit for bit.

    Rotations compose, so a key made at frame p and shifted by `offset` equals the key made at frame p + offset
    (to fp32 rounding). The angle is composed from per-digit table rotations (never offset · ω in fp32), so a
    large offset loses no precision. fp32 math; returns x's dtype."""
    cos_t, sin_t = _frame_shift_tables(x.shape[-1], float(theta))
    offset = jnp.asarray(offset, jnp.int32)
    magnitude = jnp.abs(offset)
    cos = jnp.ones(cos_t.shape[-1], jnp.float32)
    sin = jnp.zeros(cos_t.shape[-1], jnp.float32)
    for digit in range(_SHIFT_DIGITS):
        d = (magnitude >> (_SHIFT_DIGIT_BITS * digit)) & ((1 << _SHIFT_DIGIT_BITS) - 1)
        c, s = jnp.asarray(cos_t[digit])[d], jnp.asarray(sin_t[digit])[d]
        cos, sin = cos * c - sin * s, sin * c + cos * s
    sin = jnp.where(offset < 0, -sin, sin)
    lead = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:])  # [B', T, N, head_dim]
    return apply_rope(flat, cos[None], sin[None]).reshape(lead + x.shape[-3:])
