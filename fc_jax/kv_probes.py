"""Attention probes over the streaming cache: where a chunk's queries look, per layer and head.

`probe(model, params, cache, x_t, t)` runs the chunk forward `kv_cache.denoise` runs (the same queries, keys and
mask) and returns, instead of a prediction, the softmax attention mass of the chunk's queries (averaged over its
query tokens) on each region of the buffer. A pure function, jit-able, no hooks: the queries come out of the
model as flax intermediates (`Attention` sows them), the keys are the cache's plus the chunk's own.

Regions (`region_names(spec)`), in this order:
  "reference", "garment"   the condition block's two frames
  "sink"                   the history's sink chunks (the first chunks of the segment)
  "history_1" .. "history_K"  the other history chunks by age: history_1 is the most recently committed
                           (K = history_chunks - sink_chunks; a region not yet filled has mass 0)
  "chunk"                  the chunk itself
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import kv_cache

CONDITION_REGIONS = ("reference", "garment")


def region_names(spec: kv_cache.CacheSpec) -> tuple[str, ...]:
    ring = spec.history_chunks - spec.sink_chunks
    return (*CONDITION_REGIONS, "sink", *(f"history_{a}" for a in range(1, ring + 1)), "chunk")


@flax.struct.dataclass
class Probes:
    """mass      [L, B, N, R] fp32: attention mass per layer, sample and head on each region (sums to 1 over R)
    slot_mass [L, B, N, history_chunks] fp32: the same mass per history slot of the buffer (0 for an empty
              slot), what a per-chunk edit (`kv_edits.selective_withdraw`) indexes by
    regions   the R region names (`region_names`)"""

    mass: jax.Array
    slot_mass: jax.Array
    regions: tuple[str, ...] = flax.struct.field(pytree_node=False)

    def region(self, name: str) -> jax.Array:
        """The mass on one region, [L, B, N]."""
        if name not in self.regions:
            raise KeyError(f"no region {name!r}; the regions are {self.regions}")
        return self.mass[..., self.regions.index(name)]

    def summary(self) -> dict:
        """JSON-ready: per region, the mass averaged over samples and heads, per layer (a list of L floats)."""
        per_layer = np.asarray(self.mass).mean(axis=(1, 2))  # [L, R]
        return {name: [round(float(m), 6) for m in per_layer[:, r]] for r, name in enumerate(self.regions)}


def slot_regions(cache: kv_cache.KVCache) -> jax.Array:
    """Region index (into `region_names`) of each history slot [history_chunks], int32; R (out of range) for an
    empty slot. Slots below `sink_chunks` are the sink; the others are aged by commit order, with the ring's
    eviction (see `KVCache.commit_slot`) taken into account."""
    s = cache.spec
    slot = jnp.arange(s.history_chunks, dtype=jnp.int32)
    region = jnp.where(slot < s.sink_chunks, 2, 2 + cache.num_chunks - cache.slot_segments())  # 2 + age
    return jnp.where(slot < cache.valid_history_chunks(), region, len(region_names(s)))


def _token_groups(cache: kv_cache.KVCache) -> jax.Array:
    """Group of every buffer token [S], int32: 0 reference, 1 garment, 2 + j history slot j, 2 + H the current
    chunk (at the write offset), 3 + H for a token the chunk does not attend to."""
    s = cache.spec
    h = s.history_chunks
    token = jnp.arange(s.buffer_tokens, dtype=jnp.int32)
    slot = (token - s.cond_tokens) // s.chunk_tokens
    offset = cache.write_offset()
    history = jnp.where(slot < cache.valid_history_chunks(), 2 + slot, 3 + h)
    group = jnp.where(token < s.cond_tokens, token // s.tokens_per_frame, history)
    return jnp.where((token >= offset) & (token < offset + s.chunk_tokens), 2 + h, group)


def _layer_group_mass(q, keys, groups, num_groups: int):
    """q [B, T, N, H], keys [B, S, N, H], groups [S] -> mass [B, N, num_groups] (mean over T), one head at a
    time so the [T, S] probabilities of only one head are alive."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    valid = groups < num_groups
    onehot = jax.nn.one_hot(groups, num_groups, dtype=jnp.float32)  # [S, G]; invalid rows are all zero

    def head(qk):
        qh, kh = qk  # [B, T, H], [B, S, H]
        logits = jnp.einsum("bth,bsh->bts", qh, kh.astype(qh.dtype), preferred_element_type=jnp.float32) * scale
        p = jax.nn.softmax(jnp.where(valid, logits, -jnp.inf), axis=-1)
        return jnp.einsum("bs,sg->bg", p.mean(axis=1), onehot)

    mass = jax.lax.map(head, (jnp.moveaxis(q, 2, 0), jnp.moveaxis(keys, 2, 0)))  # [N, B, G]
    return jnp.moveaxis(mass, 0, 1)


def probe(model, params, cache: kv_cache.KVCache, x_t, t) -> Probes:
    """Attention probes of the chunk x_t [B, chunk_frames, h, w, C] at timestep t (scalar or [B]) on `cache`
    (what `kv_cache.denoise(model, params, cache, x_t, t)` attends with). The cache is not changed."""
    spec = cache.spec
    b = x_t.shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
    (_, kv), state = kv_cache.chunk_forward(model, params, cache, x_t, t, return_kv=True, mutable=["intermediates"])
    queries = state["intermediates"]["blocks"]["block"]["self_attn"]["queries"][0]  # [L, B, T, N, H]
    offset = cache.write_offset()
    groups = _token_groups(cache)
    h = spec.history_chunks

    def layer(args):
        q, buffer, new = args
        keys = jax.lax.dynamic_update_slice_in_dim(buffer, new.astype(buffer.dtype), offset, axis=1)
        return _layer_group_mass(q, keys, groups, 3 + h)

    group_mass = jax.lax.map(layer, (queries, cache.k, kv["k"]))  # [L, B, N, 3 + H]
    names = region_names(spec)
    slot_to_region = slot_regions(cache)
    to_region = jnp.concatenate([jnp.array([0, 1], jnp.int32), slot_to_region,
                                 jnp.array([len(names) - 1], jnp.int32)])
    mass = jnp.einsum("lbng,gr->lbnr", group_mass, jax.nn.one_hot(to_region, len(names), dtype=jnp.float32))
    return Probes(mass, group_mass[..., 2:2 + h], names)
