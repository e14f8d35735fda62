"""The few-step student's denoising of one chunk over a KV cache: the loop shared by the streaming session
(`fc_jax.sampling.streaming.student_chunk`) and the self-forcing rollout of stage 3 (`fc_jax.training.rollout`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax import flow, kv_cache


def denoise_chunk(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas, num_steps):
    """Run steps [0, num_steps) of the student schedule on one chunk over `cache` (read only; nothing committed).

    The chunk starts as noise drawn with `fold_in(key, 0)`; step i predicts x0 from the cache (`kv_cache.denoise`
    at timesteps[i], sigmas[i]) and, unless it is the last step run, re-noises that x0 to step i + 1's level with
    fresh noise drawn with `fold_in(key, i + 1)`. Same key, same chunk: a rollout stopping at step n sees exactly
    the first n steps of the full schedule.

    timesteps, sigmas: [S] model timesteps and noise levels (`flow.student_schedule`); key: the chunk's key (may be
    traced, e.g. folded with a `lax.scan` index); num_steps: in [1, S], a Python int (checked; the steps before
    the last run as a `lax.scan`) or a traced int32 scalar (not checked; they run as a `lax.while_loop`, so one
    program serves every value: stage 3's drawn exit step). Returns (x: the last step's input, x0: its
    prediction), both [B, chunk_frames, h, w, C].
    """
    steps = timesteps.shape[0]
    if isinstance(num_steps, int) and not 1 <= num_steps <= steps:
        raise ValueError(f"num_steps must be in [1, {steps}] (the schedule's steps); got {num_steps}")
    b = cache.reference.shape[0]
    shape = (b, cache.spec.chunk_frames) + cache.reference.shape[2:]

    def step_and_renoise(i, x):
        x0 = kv_cache.denoise(model, params, cache, x, timesteps[i], sigmas[i])
        noise = jax.random.normal(jax.random.fold_in(key, i + 1), shape)
        return flow.add_noise(x0, noise, jnp.full((b,), timesteps[i + 1]), jnp.full((b,), sigmas[i + 1]))

    x = jax.random.normal(jax.random.fold_in(key, 0), shape)
    x = jax.lax.fori_loop(0, num_steps - 1, step_and_renoise, x)
    last = num_steps - 1
    return x, kv_cache.denoise(model, params, cache, x, timesteps[last], sigmas[last])
