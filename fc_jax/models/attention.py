"""One attention function, several backends, structural masks.

Layouts are `[B, T, N, H]` (batch, tokens, heads, head_dim) for q and `[B, S, N, H]` for k and v.

Masks are never dense T×S arrays. A `BlockLayout` names, for every query token and every key token, the block
it belongs to (latent-frame chunks: the in-context condition block, then video chunks of 3 frames), plus a small
static boolean table saying which query block may see which key block. `kv_lengths` [B] additionally limits each
batch row to a valid key prefix (a partly filled KV cache).

Backends:
- `xla`: plain softmax attention; builds the T×S mask from the layout. The reference; small sizes only.
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")`. A layout runs as one fused call per run of
  query tokens over the keys that run sees: a static key slice when they are a prefix (block-causal in token
  order; `kv_lengths` allowed), else the concatenation of their static key ranges (no `kv_lengths`).
- `auto`: `cudnn` on GPUs, `chunked` elsewhere (CPU, TPU).
- `chunked`: pure-JAX online softmax over key tiles (flash-attention style), any backend/device. It computes the
  mask tile by tile from the block ids and skips, statically, key tiles the layout rules out entirely.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

BACKENDS = ("auto", "xla", "cudnn", "chunked")


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Which query tokens may attend to which key tokens, by blocks.

    q_blocks: [T] block id of each query token; k_blocks: [S] block id of each key token;
    allowed: [num_q_blocks, num_k_blocks] bool, allowed[i, j] = queries of block i see keys of block j.
    All three are static numpy arrays (they depend only on shapes), so tile skipping is decided at trace time.
    """

    q_blocks: np.ndarray
    k_blocks: np.ndarray
    allowed: np.ndarray

    def __post_init__(self):
        for name in ("q_blocks", "k_blocks", "allowed"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        nq, nk = self.allowed.shape
        if self.q_blocks.max(initial=0) >= nq or self.k_blocks.max(initial=0) >= nk:
            raise ValueError(
                f"block ids exceed the allowed table: max q block {self.q_blocks.max()} (table has {nq}), "
                f"max k block {self.k_blocks.max()} (table has {nk})"
            )

    def dense(self) -> np.ndarray:
        """The [T, S] boolean mask (for the reference backend and tests only)."""
        return self.allowed[self.q_blocks[:, None], self.k_blocks[None, :]]

    def key_ranges(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """[(q_start, q_end, [(k_start, k_end), ...])] per run of query tokens of one block: the contiguous key
        ranges that run sees, in token order."""
        runs = []
        start = 0
        q = self.q_blocks
        for end in list(np.nonzero(np.diff(q))[0] + 1) + [len(q)]:
            visible = np.concatenate([[False], self.allowed[q[start], self.k_blocks], [False]])
            edges = np.nonzero(np.diff(visible.astype(np.int8)))[0]
            runs.append((start, int(end), [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]))
            start = int(end)
        return runs

    def prefix_lengths(self) -> list[tuple[int, int, int]] | None:
        """If every query block sees exactly a key prefix, [(q_start, q_end, key_prefix_len)] per run of query
        tokens; else None."""
        runs = []
        for start, end, ranges in self.key_ranges():
            if len(ranges) > 1 or (ranges and ranges[0][0] != 0):
                return None
            runs.append((start, end, ranges[0][1] if ranges else 0))
        return runs


def frame_block_layout(frame_blocks: Sequence[int], tokens_per_frame: int, causal: bool = True) -> BlockLayout:
    """Self-attention layout over frames grouped in blocks (e.g. [0, 0, 1, 1, 1, 2, 2, 2] = two condition
    frames, then chunks of 3). Block-causal: a block sees itself and every earlier block; otherwise full."""
    frame_blocks = np.asarray(frame_blocks)
    ids = np.repeat(frame_blocks, tokens_per_frame)
    n = int(frame_blocks.max()) + 1
    allowed = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
    return BlockLayout(ids, ids, allowed)


def streaming_layout(
    num_chunks: int,
    chunk_frames: int,
    tokens_per_frame: int,
    cond_frames: int = 2,
    sink_chunks: int = 0,
    window_chunks: int | None = None,
) -> BlockLayout:
    """The student's block-causal layout over [condition frames, chunk 0, chunk 1, ...].

    The condition block sees only itself. Video chunk i sees the condition block, itself and earlier chunks;
    with `window_chunks` = W only the first `sink_chunks` chunks and the W most recent earlier chunks (the
    window + sink the KV cache keeps). Block 0 is the condition block, block 1 + i is chunk i.
    """
    frames = np.concatenate([np.zeros(cond_frames, int), 1 + np.repeat(np.arange(num_chunks), chunk_frames)])
    ids = np.repeat(frames, tokens_per_frame)
    n = num_chunks + 1
    allowed = np.zeros((n, n), bool)
    allowed[:, 0] = True
    for i in range(num_chunks):
        for j in range(i + 1):
            in_window = window_chunks is None or j == i or j < sink_chunks or j >= i - window_chunks
            allowed[1 + i, 1 + j] = in_window
    return BlockLayout(ids, ids, allowed)


def teacher_forcing_layout(num_chunks: int, chunk_frames: int, tokens_per_frame: int, cond_frames: int = 2) -> BlockLayout:
    """Stage-2 layout over [clean conditions, clean chunks] ++ [noisy conditions, noisy chunks] (REFERENCE §5).

    The clean half is the block-causal student layout; the noisy copy of the conditions sees only itself; noisy
    chunk k sees the clean conditions, clean chunks < k, and itself.
    """
    half = streaming_layout(num_chunks, chunk_frames, tokens_per_frame, cond_frames)
    n = num_chunks + 1
    ids = np.concatenate([half.q_blocks, half.q_blocks + n])
    allowed = np.zeros((2 * n, 2 * n), bool)
    allowed[:n, :n] = half.allowed
    allowed[n, n] = True  # noisy conditions: only themselves
    for k in range(num_chunks):
        allowed[n + 1 + k, : 1 + k] = True  # clean conditions + clean chunks before k
        allowed[n + 1 + k, n + 1 + k] = True  # itself
    return BlockLayout(ids, ids, allowed)


def cached_chunks_layout(num_chunks: int, chunk_frames: int, tokens_per_frame: int,
                         cond_frames: int = 2) -> BlockLayout:
    """`num_chunks` consecutive chunks read against a KV cache in one forward (`dit.CachePrefix`).

    Queries: the chunks. Keys: [condition block, chunks 0 .. num_chunks − 2 as committed to the cache, the chunks
    themselves]. Chunk k sees the condition block, the committed chunks before it and itself: what the streaming
    student's chunk k sees of the cache. Query block k is chunk k; key block 0 the conditions, 1 + j committed
    chunk j, num_chunks + k chunk k itself.
    """
    n, per_chunk = num_chunks, chunk_frames * tokens_per_frame
    q_ids = np.repeat(np.arange(n), per_chunk)
    committed = 1 + np.repeat(np.arange(n - 1), per_chunk)
    k_ids = np.concatenate([np.zeros(cond_frames * tokens_per_frame, int), committed, n + q_ids])
    allowed = np.zeros((n, 2 * n), bool)
    allowed[:, 0] = True
    for k in range(n):
        allowed[k, 1 : 1 + k] = True  # committed chunks before k
        allowed[k, n + k] = True  # itself
    return BlockLayout(q_ids, k_ids, allowed)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    backend: str = "xla",
    layout: BlockLayout | None = None,
    kv_lengths: jax.Array | None = None,
    q_block: int = 1024,
    kv_block: int = 1024,
) -> jax.Array:
    """Softmax attention with scale 1/√H. q [B,T,N,H], k/v [B,S,N,H] -> [B,T,N,H] in q's dtype."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q [B,T,N,H] and k, v [B,S,N,H]; got {q.shape}, {k.shape}, {v.shape}")
    if layout is not None and (len(layout.q_blocks) != q.shape[1] or len(layout.k_blocks) != k.shape[1]):
        raise ValueError(
            f"block layout covers {len(layout.q_blocks)} queries and {len(layout.k_blocks)} keys, "
            f"but attention got {q.shape[1]} and {k.shape[1]}"
        )
    if backend == "auto":
        backend = "cudnn" if jax.default_backend() == "gpu" else "chunked"
    if backend == "xla":
        return _xla_attention(q, k, v, layout, kv_lengths)
    if backend == "cudnn":
        return _by_key_ranges(q, k, v, layout, kv_lengths, _cudnn_attention)
    if backend == "chunked":
        return chunked_attention(q, k, v, layout, kv_lengths, q_block=q_block, kv_block=kv_block)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


def _xla_attention(q, k, v, layout, kv_lengths):
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * scale
    mask = jnp.ones((1, 1, q.shape[1], k.shape[1]), bool)
    if layout is not None:
        mask = mask & jnp.asarray(layout.dense())[None, None]
    if kv_lengths is not None:
        mask = mask & (jnp.arange(k.shape[1])[None, None, None, :] < kv_lengths[:, None, None, None])
    logits = jnp.where(mask, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(mask.any(-1, keepdims=True), weights, 0.0)  # fully masked rows give zeros, not NaN
    return jnp.einsum("bnts,bsnh->btnh", weights.astype(v.dtype), v).astype(q.dtype)


def _cudnn_attention(q, k, v, kv_lengths):
    return jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=kv_lengths, implementation="cudnn"
    ).astype(q.dtype)


def _by_key_ranges(q, k, v, layout, kv_lengths, dense_fn: Callable):
    """Run `dense_fn(q_run, k_run, v_run, kv_lengths)` per run of query tokens of one block over the keys it sees:
    a key prefix (lengths capped to it), or the concatenation of its key ranges (only without `kv_lengths`, which
    count a valid key prefix)."""
    if layout is None:
        return dense_fn(q, k, v, kv_lengths)
    prefix = layout.prefix_lengths()
    if prefix is not None:
        return jnp.concatenate([dense_fn(q[:, a:b], k[:, :n], v[:, :n],
                                         None if kv_lengths is None else jnp.minimum(kv_lengths, n))
                                for a, b, n in prefix], axis=1)
    if kv_lengths is not None:
        raise ValueError("kv_lengths limit a key prefix, and this block layout is not block-causal in token order; "
                         "use the 'chunked' backend")
    gather = lambda x, ranges: jnp.concatenate([x[:, a:b] for a, b in ranges], axis=1)
    return jnp.concatenate([dense_fn(q[:, a:b], gather(k, ranges), gather(v, ranges), None)
                            for a, b, ranges in layout.key_ranges()], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# The chunked (memory-efficient) path.


def _tile_schedule(layout: BlockLayout | None, t_pad: int, s: int, s_pad: int, q_block: int, kv_block: int):
    """Static [num_q_tiles, max_k_tiles] key-tile indices per query tile and a validity flag for each."""
    nq, nk = t_pad // q_block, s_pad // kv_block
    if layout is None:
        needed = np.ones((nq, nk), bool)
    else:
        qb = np.pad(layout.q_blocks, (0, t_pad - len(layout.q_blocks)), mode="edge")
        kb = np.pad(layout.k_blocks, (0, s_pad - s), mode="edge")
        nqb, nkb = layout.allowed.shape
        q_has = np.zeros((nq, nqb), bool)
        q_has[np.repeat(np.arange(nq), q_block), qb] = True
        k_has = np.zeros((nk, nkb), bool)
        k_has[np.repeat(np.arange(nk), kv_block), kb] = True
        needed = (q_has.astype(np.int32) @ layout.allowed.astype(np.int32) @ k_has.T.astype(np.int32)) > 0
    width = max(1, int(needed.sum(1).max()))
    tiles = np.zeros((nq, width), np.int32)
    valid = np.zeros((nq, width), bool)
    for i in range(nq):
        js = np.nonzero(needed[i])[0]
        tiles[i, : len(js)] = js
        valid[i, : len(js)] = True
    return tiles, valid


def chunked_attention(q, k, v, layout=None, kv_lengths=None, *, q_block=1024, kv_block=1024):
    """Online-softmax attention over key tiles; equal to the xla backend, memory O(q_block × kv_block) per step.

    Each query tile scans only the key tiles the layout allows (decided statically); inside a tile the mask is
    rebuilt from block ids, key padding and kv_lengths. Both loops are checkpointed, so the backward pass keeps
    only per-tile carries instead of the T×S probabilities.
    """
    b, t, n, h = q.shape
    s = k.shape[1]
    q_block, kv_block = min(q_block, t), min(kv_block, s)
    t_pad, s_pad = -(-t // q_block) * q_block, -(-s // kv_block) * kv_block
    tiles, valid = _tile_schedule(layout, t_pad, s, s_pad, q_block, kv_block)
    if layout is None:
        q_ids = np.zeros(t_pad, np.int32)
        k_ids = np.zeros(s_pad, np.int32)
        allowed = np.ones((1, 1), bool)
    else:
        q_ids = np.pad(layout.q_blocks, (0, t_pad - t), mode="edge").astype(np.int32)
        k_ids = np.pad(layout.k_blocks, (0, s_pad - s), mode="edge").astype(np.int32)
        allowed = layout.allowed
    lengths = jnp.full((b,), s, jnp.int32) if kv_lengths is None else jnp.minimum(kv_lengths.astype(jnp.int32), s)

    scale = 1.0 / math.sqrt(h)
    qp = jnp.pad(q, ((0, 0), (0, t_pad - t), (0, 0), (0, 0))).reshape(b, t_pad // q_block, q_block, n, h)
    kp = jnp.pad(k, ((0, 0), (0, s_pad - s), (0, 0), (0, 0)))
    vp = jnp.pad(v, ((0, 0), (0, s_pad - s), (0, 0), (0, 0)))
    allowed_j = jnp.asarray(allowed)
    q_ids_j, k_ids_j = jnp.asarray(q_ids), jnp.asarray(k_ids)

    @jax.checkpoint
    def key_step(carry, inputs):
        acc, row_max, row_sum, q_tile, qi = carry[0], carry[1], carry[2], carry[3], carry[4]
        j, ok = inputs
        k0 = j * kv_block
        k_tile = jax.lax.dynamic_slice_in_dim(kp, k0, kv_block, axis=1)
        v_tile = jax.lax.dynamic_slice_in_dim(vp, k0, kv_block, axis=1)
        logits = jnp.einsum("btnh,bsnh->bnts", q_tile, k_tile, preferred_element_type=jnp.float32) * scale
        q_tile_ids = jax.lax.dynamic_slice_in_dim(q_ids_j, qi * q_block, q_block)
        k_tile_ids = jax.lax.dynamic_slice_in_dim(k_ids_j, k0, kv_block)
        key_pos = k0 + jnp.arange(kv_block)
        mask = allowed_j[q_tile_ids[:, None], k_tile_ids[None, :]][None, None]
        mask = mask & (key_pos[None, None, None, :] < lengths[:, None, None, None]) & ok
        logits = jnp.where(mask, logits, -jnp.inf)
        new_max = jnp.maximum(row_max, logits.max(-1))
        safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        p = jnp.exp(logits - safe_max[..., None])
        correction = jnp.exp(jnp.where(jnp.isfinite(row_max), row_max, safe_max) - safe_max)
        row_sum = row_sum * correction + p.sum(-1)
        acc = acc * correction[..., None] + jnp.einsum(
            "bnts,bsnh->bnth", p.astype(v_tile.dtype), v_tile, preferred_element_type=jnp.float32
        )
        return (acc, new_max, row_sum, q_tile, qi), None

    @jax.checkpoint
    def query_tile(args):
        q_tile, qi, tile_js, tile_ok = args
        init = (
            jnp.zeros((b, n, q_block, h), jnp.float32),
            jnp.full((b, n, q_block), -jnp.inf, jnp.float32),
            jnp.zeros((b, n, q_block), jnp.float32),
            q_tile,
            qi,
        )
        (acc, _, row_sum, _, _), _ = jax.lax.scan(key_step, init, (tile_js, tile_ok))
        out = acc / jnp.where(row_sum > 0, row_sum, 1.0)[..., None]
        return jnp.transpose(out, (0, 2, 1, 3))  # [B, q_block, N, H]

    nq = t_pad // q_block
    out = jax.lax.map(
        query_tile,
        (jnp.moveaxis(qp, 1, 0), jnp.arange(nq, dtype=jnp.int32), jnp.asarray(tiles), jnp.asarray(valid)),
    )  # [nq, B, q_block, N, H]
    out = jnp.moveaxis(out, 0, 1).reshape(b, t_pad, n, h)[:, :t]
    return out.astype(q.dtype)
