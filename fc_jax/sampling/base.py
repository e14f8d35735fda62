"""The base model's TI2V sampler (text + first frame -> video): UniPC over N steps with classifier-free guidance
on the text, the clean first-frame latent re-inserted after every step as upstream's image-to-video does.
The conditional and unconditional passes run as one batch of 2B (`fc_jax.sampling.guidance`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fc_jax.models import dit
from fc_jax.sampling.guidance import text_guided_flow
from fc_jax.sampling.unipc import UniPCState, unipc_schedule, unipc_step


def guided_ti2v_flow(model, params, first, x, t, context, negative_context, guidance_scale: float):
    """v = v_uncond + g·(v_cond − v_uncond), the unconditional pass with `negative_context` as the text (the first
    frame kept)."""
    forward = lambda *a: dit.ti2v_forward(model, params, *a)
    return text_guided_flow(forward, (first,), x, t, context, negative_context, guidance_scale)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "shift", "guidance_scale", "sigma_grid"))
def sample_ti2v(model, params, first, noise, context, negative_context, *, num_steps: int, shift: float,
                guidance_scale: float, sigma_grid: str = "diffusers"):
    """Denoise `noise` [B, F, H, W, C] into clean video latents whose frame 0 is the clean first-frame latent
    `first` [B, 1, H, W, C], conditioned on text embeddings `context` [B, L, D] (`negative_context` the
    unconditional text, same shape). Returns [B, F, H, W, C] with frame 0 = `first`."""
    schedule = unipc_schedule(num_steps, shift, grid=sigma_grid)
    timesteps = jnp.asarray(schedule.timesteps, jnp.float32)
    insert = lambda x: jnp.concatenate([first.astype(x.dtype), x[:, 1:]], axis=1)

    def step(carry, i):
        x, state = carry
        v = guided_ti2v_flow(model, params, first, x, timesteps[i], context, negative_context, guidance_scale)
        x, state = unipc_step(schedule, i, x, v, state)
        return (insert(x), state), None

    x = insert(noise)
    (x, _), _ = jax.lax.scan(step, (x, UniPCState.init(x)), jnp.arange(num_steps))
    return x
