"""The self-forcing rollout of stage 3 (REFERENCE §5), through our own KV-cache operations.

Prefill the two condition latents at t = 0, then generate `num_chunks` chunks with the few-step schedule. One
exit step, drawn once per rollout and shared by all chunks, gives each chunk's output; only that forward keeps
its gradient. Steps before it run without gradient (their x0 is re-noised with fresh noise to the next level),
and the t = 0 commit pass runs without gradient: the cache's K/V values are the commit's.

Two gradient paths run through that forward, as in the authors' trainer
(`pipelines/self_forcing_wan22_ic_training.py`, `backbones/wan22/modules/causal_model.py`):
- the text: with `context`, the cross-attention K/V are recomputed from the text embedding in the gradient
  forward (the authors' gradient-checkpointed blocks get no cross-attention cache), so the text embedding and the
  cross-attention K/V projections learn; the no-gradient passes keep reading the K/V cached at prefill;
- across chunks (`straight_through=True`): the authors write each chunk's K/V into the cache in place, so the
  exit-step forward's K/V stay in autograd's history under the commit pass's values, and a later chunk's
  attention back-propagates into them. Here that is an explicit straight-through estimator (`dit.CachePrefix`):
  forward values are the commit's, the gradient of chunk j's history K/V goes to chunk j's exit-step K/V.
  `straight_through=False`: the cache carries no gradient, no gradient crosses chunks.

It runs in two passes to keep one cache, not one per chunk, alive for the backward pass:
1. without gradient: the whole rollout as the streaming student runs it (the same denoise loop,
   `fc_jax.sampling.student.denoise_chunk`), keeping each chunk's exit-step input;
2. with gradient: every chunk's exit-step forward again, in ONE forward over all chunks on the cache holding
   every chunk but the last (`kv_cache.denoise_chunks`): chunk i attends over the condition block, the committed
   chunks before it and itself, exactly the keys and values it saw (the rollout must fit the window: no
   eviction). Layer by layer, the exit-step K/V of every chunk exist side by side, which is what lets the
   straight-through gradient stay inside a layer (no cache-sized cotangent is carried across chunks).
The attention backward needs the keys and values each gradient forward read; a per-chunk cache would keep
`num_chunks` snapshots of it (about 59 GiB per sample at 5B, 720p, 7 chunks), the shared final cache keeps one.
The price is one more forward per chunk; the critic's rollout, which needs no gradient, skips the second pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax import flow, kv_cache
from fc_jax.sampling.student import denoise_chunk


def self_forcing_rollout(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas, *, num_chunks: int,
                         exit_step, gradient: bool = True, context=None, straight_through: bool = False,
                         commit_sigma: float = 0.0):
    """Roll the student out from a freshly prefilled cache (no chunk committed yet).

    timesteps, sigmas: [S] the student schedule (`flow.student_schedule`); exit_step: in [0, S), drawn once per
    rollout: a Python int (checked) or a traced int32 scalar (one program for every exit step). Returns (latents
    [B, num_chunks·chunk, h, w, C] with gradient w.r.t. `params` through the exit-step forwards only, the final
    cache (no gradient)).
    `gradient=False` skips the second pass (the same latents, no gradient: the critic's rollout).
    context [B, Lt, text_dim]: the text the cache was prefilled with; the gradient pass recomputes the
    cross-attention K/V from it (None: reads the cached ones, no gradient through the text path).
    straight_through: the cross-chunk gradient (see the module docstring). commit_sigma: the commit pass sees each
    chunk noised to this σ (fresh noise from `fold_in(chunk key, S)`; 0: the clean chunk, as the streaming student).
    The first pass runs the chunks under `lax.scan`, so the program does not grow with `num_chunks`.
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
    cache = jax.lax.stop_gradient(cache)

    def make_chunk(cache, c):
        """(the exit step's input, its x0) of chunk c, without gradient: steps [0, exit_step] of the schedule."""
        return denoise_chunk(model, frozen, cache, jax.random.fold_in(key, c), timesteps, sigmas, exit_step + 1)

    def commit(cache, c, x0):
        if commit_sigma:
            noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, c), steps), x0.shape)
            x0 = flow.add_noise(x0, noise, None, jnp.full(x0.shape[:1], commit_sigma))
        return kv_cache.commit(model, frozen, cache, x0)

    def make_and_commit(cache, c):
        x, x0 = make_chunk(cache, c)
        return commit(cache, c, x0), (x, x0)

    cache, (inputs, x0s) = jax.lax.scan(make_and_commit, cache, jnp.arange(num_chunks - 1))
    # `cache` now holds every chunk but the last (whose commit could start the ring's eviction).
    last_input, last_x0 = make_chunk(cache, num_chunks - 1)
    final = commit(cache, num_chunks - 1, last_x0)
    if not gradient:
        return _frames(jnp.concatenate([x0s, last_x0[None]])), final

    exit_inputs = _frames(jnp.concatenate([inputs, last_input[None]]))
    outputs = kv_cache.denoise_chunks(model, params, cache, exit_inputs, timesteps[exit_step], sigmas[exit_step],
                                      context=context, straight_through=straight_through)
    return outputs, final


def _frames(chunks):
    """[num_chunks, B, chunk, h, w, C] -> [B, num_chunks·chunk, h, w, C]."""
    n, b = chunks.shape[:2]
    return jnp.moveaxis(chunks, 0, 1).reshape((b, n * chunks.shape[2]) + chunks.shape[3:])
