"""The few-step student's denoising of one chunk over a KV cache: the loop shared by the streaming session
(`fc_jax.sampling.streaming.student_chunk`) and the self-forcing rollout of stage 3 (`fc_jax.training.rollout`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax import flow, kv_cache


def denoise_chunk(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas, num_steps: int):
    """Run steps [0, num_steps) of the student schedule on one chunk over `cache` (read only; nothing committed).

    The chunk starts as noise drawn with `fold_in(key, 0)`; step i predicts x0 from the cache (`kv_cache.denoise`
    at timesteps[i], sigmas[i]) and, unless it is the last step run, re-noises that x0 to step i + 1's level with
    fresh noise drawn with `fold_in(key, i + 1)`. Same key, same chunk: a rollout stopping at step n sees exactly
    the first n steps of the full schedule.

    timesteps, sigmas: [S] model timesteps and noise levels (`flow.student_schedule`); key: the chunk's key (may be
    traced, e.g. folded with a `lax.scan` index); num_steps: a Python int in [1, S] (the steps are unrolled, each
    value compiles once). Returns (x: the last step's input, x0: its prediction), both
    [B, chunk_frames, h, w, C].
    """
    steps = timesteps.shape[0]
    if not 1 <= num_steps <= steps:
        raise ValueError(f"num_steps must be in [1, {steps}] (the schedule's steps); got {num_steps}")
    b = cache.reference.shape[0]
    shape = (b, cache.spec.chunk_frames) + cache.reference.shape[2:]
    x = jax.random.normal(jax.random.fold_in(key, 0), shape)
    for i in range(num_steps):
        x0 = kv_cache.denoise(model, params, cache, x, timesteps[i], sigmas[i])
        if i + 1 < num_steps:
            noise = jax.random.normal(jax.random.fold_in(key, i + 1), shape)
            x = flow.add_noise(x0, noise, jnp.full((b,), timesteps[i + 1]), jnp.full((b,), sigmas[i + 1]))
    return x, x0
