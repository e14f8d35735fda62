"""The in-context teacher sampler: UniPC over N steps, classifier-free guidance that drops only the text.

The reference and garment latents enter every step clean, at t = 0 (they are separate inputs of the in-context
forward, so they are never noised). The conditional and unconditional passes run as one batch of 2B.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fc_jax.models import dit
from fc_jax.sampling.unipc import UniPCState, unipc_schedule, unipc_step


def guided_flow(model, params, reference, garment, x, t, context, negative_context, guidance_scale: float):
    """v = v_uncond + g·(v_cond − v_uncond), the unconditional pass with `negative_context` in place of the text
    (reference and garment kept)."""
    b = x.shape[0]
    if guidance_scale == 1.0:
        return dit.in_context_forward(model, params, reference, garment, x, jnp.full((b,), t), context)
    double = lambda a: jnp.concatenate([a, a], axis=0)
    v = dit.in_context_forward(
        model, params, double(reference), double(garment), double(x), jnp.full((2 * b,), t),
        jnp.concatenate([context, negative_context], axis=0),
    )
    v_cond, v_uncond = v[:b], v[b:]
    return v_uncond + guidance_scale * (v_cond - v_uncond)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "shift", "guidance_scale", "sigma_grid"))
def sample_teacher(
    model,
    params,
    reference,
    garment,
    noise,
    context,
    negative_context,
    *,
    num_steps: int,
    shift: float,
    guidance_scale: float,
    sigma_grid: str = "diffusers",
):
    """Denoise `noise` [B, F, H, W, C] into clean video latents conditioned on reference / garment latents
    [B, 1, H, W, C] and text embeddings [B, L, text_dim]; `negative_context` is the unconditional text, the
    embedding of `config.sampling.negative_prompt` (the authors' Wan negative prompt, `pipelines/
    wan22_ic_inference.py`). `sigma_grid`: `config.sampling.teacher_sigmas` (`unipc.flow_sigmas`)."""
    schedule = unipc_schedule(num_steps, shift, grid=sigma_grid)
    timesteps = jnp.asarray(schedule.timesteps, jnp.float32)

    def step(carry, i):
        x, state = carry
        v = guided_flow(model, params, reference, garment, x, timesteps[i], context, negative_context, guidance_scale)
        x, state = unipc_step(schedule, i, x, v, state)
        return (x, state), None

    (x, _), _ = jax.lax.scan(step, (noise, UniPCState.init(noise)), jnp.arange(num_steps))
    return x
