"""Custom KV-cache edits as plug-ins: the protocol, and edits beyond the paper.

The protocol: an edit is a function

    edit(model, params, cache, **kwargs) -> cache

pure (it returns a new `kv_cache.KVCache` and leaves its input as it was), with static shapes (the output has
the input's tree, spec, shapes and dtypes, so it jit-compiles once and the cache can be donated), keeping the
cache's invariants. `StreamingSession.apply_edit(edit, **kwargs)` runs one between chunks, and
`StreamingSession.switch_garment(image, edit=edit)` / `python -m fc_jax.generate --edit=module:function` run
one at every garment switch with the keyword arguments `garment` (the new garment's latents [B, 1, h, w, C]) and
`reference` (the last generated frame re-encoded, [B, 1, h, w, C]). `kv_cache.check_edit` tells a researcher whether an
edit keeps the protocol.

Examples (each an edit by the protocol):
  blend_garments       a gradual switch's step: the condition block's K/V mixed between two garments
  gradual_switch_start the first step of a gradual switch: withdraw and disentangle as the paper, then a blend
  selective_withdraw   drop only the history chunks whose attention mass (a probe) reaches a threshold
  selective_switch     refresh + disentangle, then `selective_withdraw` on a probe of the next chunk
  reference_only_refresh  the reference re-encoded from the last frame; garment and history kept
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Callable

import jax
import jax.numpy as jnp

from fc_jax import kv_cache, kv_probes


# -- edits beyond the paper -----------------------------------------------------------------------------------

def blend_garments(model, params, cache: kv_cache.KVCache, garment_from, garment_to, alpha) -> kv_cache.KVCache:
    """One step of a gradual switch: the condition block's K/V (keys and values of the reference and garment
    tokens, computed with each garment) mixed as (1 − α)·from + α·to, α a scalar in [0, 1] (traced: one
    compile for every step). A switch over k chunks applies it with α = 1/k, 2/k, .., 1 before each of them.
    At α = 0 and α = 1 the cache equals `refresh_garment` with that garment exactly; the cache's `garment` is
    the nearer of the two."""
    alpha = jnp.asarray(alpha, jnp.float32)
    a = kv_cache.refresh_garment(model, params, cache, garment_from)
    b = kv_cache.refresh_garment(model, params, cache, garment_to)
    n = cache.spec.cond_tokens

    def mix(x, y):
        cond = ((1 - alpha) * x[:, :, :n].astype(jnp.float32) + alpha * y[:, :, :n].astype(jnp.float32))
        return jax.lax.dynamic_update_slice_in_dim(x, cond.astype(x.dtype), 0, axis=2)

    return a.replace(k=mix(a.k, b.k), v=mix(a.v, b.v), garment=jnp.where(alpha < 0.5, a.garment, b.garment))


def gradual_switch_start(model, params, cache: kv_cache.KVCache, garment_from, garment_to, reference,
                         alpha) -> kv_cache.KVCache:
    """The first step of a gradual switch over k chunks (α = 1/k): the paper's history withdraw and reference
    disentangle, then the condition block blended (`blend_garments`); `blend_garments` with α = 2/k, .., 1
    before each of the next chunks completes it. At α = 1 it is the paper's full switch."""
    cache = kv_cache.withdraw_history(kv_cache.disentangle_reference(model, params, cache, reference))
    return blend_garments(model, params, cache, garment_from, garment_to, alpha)


def withdraw_chunks(cache: kv_cache.KVCache, drop) -> kv_cache.KVCache:
    """Withdraw the history chunks of the slots where `drop` [history_chunks] (bool) is true; the kept ones move
    to the front (oldest first) and start a new segment, as `kv_cache.withdraw_history` with `keep_frames` does
    (RoPE positions kept). Dropping nothing leaves the cache exactly as it was; dropping every chunk equals
    `withdraw_history(cache, 0)` exactly."""
    s = cache.spec
    drop = jnp.asarray(drop, bool)
    if drop.shape != (s.history_chunks,):
        raise ValueError(f"drop must be [history_chunks] = [{s.history_chunks}] bools; found shape {drop.shape}")
    slot = jnp.arange(s.history_chunks, dtype=jnp.int32)
    valid = slot < cache.valid_history_chunks()
    kept = valid & ~drop
    # Kept slots first by commit order, then the rest in slot order (stable: nothing kept = the identity).
    order = jnp.argsort(jnp.where(kept, cache.slot_segments(), cache.num_chunks + slot), stable=True)
    tokens = s.cond_tokens + (order[:, None] * s.chunk_tokens + jnp.arange(s.chunk_tokens)).reshape(-1)
    gather = lambda x: jax.lax.dynamic_update_slice_in_dim(x, jnp.take(x, tokens, axis=2), s.cond_tokens, axis=2)
    edited = cache.replace(k=gather(cache.k), v=gather(cache.v), num_chunks=jnp.sum(kept).astype(jnp.int32))
    nothing = ~jnp.any(valid & drop)
    return jax.tree.map(lambda old, new: jnp.where(nothing, old, new), cache, edited)


def selective_withdraw(model, params, cache: kv_cache.KVCache, slot_mass, threshold) -> kv_cache.KVCache:
    """Drop only the history chunks whose attention mass `slot_mass` [history_chunks] (e.g.
    `Probes.slot_mass` averaged over layers, samples and heads) is at least `threshold`. Threshold 0 equals the
    full withdraw; one above every mass equals no withdraw."""
    return withdraw_chunks(cache, jnp.asarray(slot_mass, jnp.float32) >= threshold)


def selective_switch(model, params, cache: kv_cache.KVCache, garment, reference, threshold=0.1, probe_t=1000.0,
                     seed=0) -> kv_cache.KVCache:
    """A garment switch that withdraws selectively: refresh the garment and disentangle the reference (the
    paper's), probe a next chunk of pure noise (drawn from `seed`) at timestep `probe_t` on that cache, and
    withdraw the history chunks it puts at least `threshold` of its attention on (mean over layers, samples and
    heads): the history the new chunk would copy the old garment from."""
    cache = kv_cache.switch_garment(model, params, cache, garment, reference, withdraw=False)
    b, _, h, w, c = cache.reference.shape
    noise = jax.random.normal(jax.random.key(seed), (b, cache.spec.chunk_frames, h, w, c), jnp.float32)
    mass = kv_probes.probe(model, params, cache, noise, probe_t).slot_mass.mean(axis=(0, 1, 2))
    return selective_withdraw(model, params, cache, mass, threshold)


def reference_only_refresh(model, params, cache: kv_cache.KVCache, garment=None, reference=None) -> kv_cache.KVCache:
    """Only the reference disentangle: the condition block rebuilt with `reference` (the last frame, re-encoded);
    the garment and the history stay. Takes (and ignores) `garment`, so it can stand in for a switch."""
    if reference is None:
        raise ValueError("reference_only_refresh needs `reference` (the last generated frame, re-encoded)")
    return kv_cache.disentangle_reference(model, params, cache, reference)


def parse_edit_args(text: str) -> dict:
    """An edit's keyword arguments as given on a command line (a JSON object of numbers, e.g. '{"threshold":
    0.2}') -> dict; ValueError saying what was expected."""
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from e
    if not isinstance(args, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in args.values()):
        raise ValueError('expected a JSON object of numbers, e.g. \'{"threshold": 0.2}\'')
    return args


def load_edit(spec: str, args: dict | None = None) -> Callable:
    """"module:function" (e.g. "fc_jax.kv_edits:selective_switch", or a module of your own on the path) -> the
    edit, with `args` (keyword arguments) bound; ValueError naming what was expected and found."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"an edit is named module:function (e.g. fc_jax.kv_edits:reference_only_refresh); got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"edit {spec!r}: cannot import module {module_name!r} ({e})") from e
    edit = getattr(module, name, None)
    if not callable(edit):
        raise ValueError(f"edit {spec!r}: module {module_name!r} has no function {name!r}")
    return functools.partial(edit, **args) if args else edit
