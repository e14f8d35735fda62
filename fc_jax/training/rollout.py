"""The self-forcing rollout of stage 3 (REFERENCE §5), through our own KV-cache operations.

Prefill the two condition latents at t = 0, then generate `num_chunks` chunks with the few-step schedule. One
exit step, drawn once per rollout and shared by all chunks, gives each chunk's output; only that forward keeps
its gradient. Steps before it run without gradient (their x0 is re-noised with fresh noise to the next level),
and the t = 0 commit pass runs without gradient, so the cache K/V carry none: no gradient crosses chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax import kv_cache
from fc_jax.sampling import flow


def self_forcing_rollout(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas, *, num_chunks: int,
                         exit_step: int):
    """Roll the student out from a prefilled cache.

    timesteps, sigmas: [S] the student schedule (`flow.student_schedule`); exit_step: a Python int in [0, S) —
    draw it on the host once per rollout (each value compiles once). Returns (latents [B, num_chunks·chunk, h, w, C]
    with gradient w.r.t. `params` through the exit-step forwards only, the final cache (no gradient)).
    """
    steps = timesteps.shape[0]
    if not 0 <= exit_step < steps:
        raise ValueError(f"exit_step must be in [0, {steps}); got {exit_step}")
    b = cache.reference.shape[0]
    shape = (b, cache.spec.chunk_frames) + cache.reference.shape[2:]
    frozen = jax.lax.stop_gradient(params)
    cache = jax.lax.stop_gradient(cache)
    outputs = []
    for c in range(num_chunks):
        chunk_key = jax.random.fold_in(key, c)
        x = jax.random.normal(jax.random.fold_in(chunk_key, 0), shape)
        for i in range(exit_step):
            x0 = kv_cache.denoise(model, frozen, cache, x, timesteps[i], sigmas[i])
            noise = jax.random.normal(jax.random.fold_in(chunk_key, i + 1), shape)
            x = flow.add_noise(x0, noise, jnp.full((b,), timesteps[i + 1]), jnp.full((b,), sigmas[i + 1]))
        x0 = kv_cache.denoise(model, params, cache, x, timesteps[exit_step], sigmas[exit_step])
        outputs.append(x0)
        cache = kv_cache.commit(model, frozen, cache, jax.lax.stop_gradient(x0))
    return jnp.concatenate(outputs, axis=1), cache
