"""The in-context teacher sampler: UniPC over N steps, classifier-free guidance that drops only the text.

The reference and garment latents enter every step clean, at t = 0 (they are separate inputs of the in-context
forward, so they are never noised; a channel-concat teacher, `model.condition`, takes them on channels). The
conditional and unconditional passes run as one batch of 2B.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fc_jax.models import dit
from fc_jax.sampling.guidance import text_guided_flow
from fc_jax.sampling.unipc import UniPCState, unipc_schedule, unipc_step


def guided_flow(model, params, reference, garment, x, t, context, negative_context, guidance_scale: float):
    """v = v_uncond + g·(v_cond − v_uncond), the unconditional pass with `negative_context` in place of the text
    (reference and garment kept)."""
    forward = lambda *a: dit.conditioned_forward(model, params, *a)
    return text_guided_flow(forward, (reference, garment), x, t, context, negative_context, guidance_scale)


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
