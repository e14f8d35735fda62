"""Classifier-free guidance on the text: v = v_uncond + g·(v_cond − v_uncond), both passes as one batch of 2B."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def text_guided_flow(forward: Callable, conditions: Sequence[jax.Array], x: jax.Array, t, context: jax.Array,
                     negative_context: jax.Array, guidance_scale: float) -> jax.Array:
    """The guided flow of `forward(*conditions, x, t [B], context)` at the scalar timestep `t`: the unconditional
    pass keeps `conditions` (first frame, reference, garment) and reads `negative_context` [B, L, D] as the text.
    x [B, ...] -> v [B, ...]; one conditional pass when `guidance_scale` is 1."""
    b = x.shape[0]
    if guidance_scale == 1.0:
        return forward(*conditions, x, jnp.full((b,), t), context)
    double = lambda a: jnp.concatenate([a, a], axis=0)
    v = forward(*map(double, conditions), double(x), jnp.full((2 * b,), t),
                jnp.concatenate([context, negative_context], axis=0))
    v_cond, v_uncond = v[:b], v[b:]
    return v_uncond + guidance_scale * (v_cond - v_uncond)
