"""The self-forcing rollout of stage 3 (REFERENCE §5), through our own KV-cache operations.

Prefill the two condition latents at t = 0, then generate `num_chunks` chunks with the few-step schedule. One
exit step, drawn once per rollout and shared by all chunks, gives each chunk's output; only that forward keeps
its gradient. Steps before it run without gradient (their x0 is re-noised with fresh noise to the next level),
and the t = 0 commit pass runs without gradient, so the cache K/V carry none: no gradient crosses chunks.

It runs in two passes to keep one cache, not one per chunk, alive for the backward pass:
1. without gradient: the whole rollout as the streaming student runs it (the same denoise loop,
   `fc_jax.sampling.student.denoise_chunk`), keeping each chunk's exit-step input;
2. with gradient: each chunk's exit-step forward again, on the cache holding every chunk but the last, viewed as
   it was when that chunk was made (`num_chunks`, `next_frame` set back). Up to then the cache only grows (the
   rollout must fit the window: no eviction), and a chunk's attention is length-masked to the tokens before it
   plus itself, so that cache gives it exactly the keys and values it saw.
The attention backward needs the keys and values each gradient forward read; a per-chunk cache would keep
`num_chunks` snapshots of it (about 59 GiB per sample at 5B, 720p, 7 chunks), the shared final cache keeps one.
The price is one more forward per chunk; the critic's rollout, which needs no gradient, skips the second pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax import kv_cache
from fc_jax.sampling.student import denoise_chunk


def self_forcing_rollout(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas, *, num_chunks: int,
                         exit_step, gradient: bool = True):
    """Roll the student out from a freshly prefilled cache (no chunk committed yet).

    timesteps, sigmas: [S] the student schedule (`flow.student_schedule`); exit_step: in [0, S), drawn once per
    rollout: a Python int (checked) or a traced int32 scalar (one program for every exit step). Returns (latents [B, num_chunks·chunk, h, w, C]
    with gradient w.r.t. `params` through the exit-step forwards only, the final cache (no gradient)).
    `gradient=False` skips the second pass (the same latents, no gradient: the critic's rollout).
    Chunks run under `lax.scan`, so the program does not grow with `num_chunks`.
    """
    steps = timesteps.shape[0]
    if isinstance(exit_step, int) and not 0 <= exit_step < steps:
        raise ValueError(f"exit_step must be in [0, {steps}); got {exit_step}")
    spec = cache.spec
    if num_chunks > spec.history_chunks + 1:
        raise ValueError(f"a rollout of {num_chunks} chunks would evict history from a cache holding "
                         f"{spec.history_chunks} history chunks and the current one; widen student.window_frames "
                         f"to at least {spec.cond_frames + num_chunks * spec.chunk_frames}")
    frozen = jax.lax.stop_gradient(params)
    start = cache = jax.lax.stop_gradient(cache)

    def make_chunk(cache, c):
        """(the exit step's input, its x0) of chunk c, without gradient: steps [0, exit_step] of the schedule."""
        return denoise_chunk(model, frozen, cache, jax.random.fold_in(key, c), timesteps, sigmas, exit_step + 1)

    def make_and_commit(cache, c):
        x, x0 = make_chunk(cache, c)
        return kv_cache.commit(model, frozen, cache, x0), (x, x0)

    cache, (inputs, x0s) = jax.lax.scan(make_and_commit, cache, jnp.arange(num_chunks - 1))
    # `cache` now holds every chunk but the last (whose commit could start the ring's eviction).
    last_input, last_x0 = make_chunk(cache, num_chunks - 1)
    final = kv_cache.commit(model, frozen, cache, last_x0)
    if not gradient:
        return _frames(jnp.concatenate([x0s, last_x0[None]])), final

    def regrad(c, x):
        as_made = cache.replace(num_chunks=start.num_chunks + c, next_frame=start.next_frame + c * spec.chunk_frames)
        return kv_cache.denoise(model, params, as_made, x, timesteps[exit_step], sigmas[exit_step])

    outputs = jax.lax.map(lambda a: regrad(*a), (jnp.arange(num_chunks), jnp.concatenate([inputs, last_input[None]])))
    return _frames(outputs), final


def _frames(chunks):
    """[num_chunks, B, chunk, h, w, C] -> [B, num_chunks·chunk, h, w, C]."""
    n, b = chunks.shape[:2]
    return jnp.moveaxis(chunks, 0, 1).reshape((b, n * chunks.shape[2]) + chunks.shape[3:])
