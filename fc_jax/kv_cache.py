"""The streaming student's KV cache and its training-free rescheduling, as pure functions over a pytree.

Buffer layout per layer (stacked on a leading `layers` axis), tokens along axis 2:

    [ condition block (reference + garment frames) | history slots (sink chunks, then a ring) | current chunk ]

Keys are stored after RoPE, so their order in the buffer does not matter to attention; history chunks are
written in commit order until the slots are full, then the ring evicts the oldest non-sink chunk in place. The
valid part is therefore always a prefix `[0, write_offset + chunk_tokens)`, which fused kernels handle with
`kv_lengths` — no concatenation, and with donation the commit writes one chunk in place.

Operations (each returns a new cache; none mutates its input):
  prefill, denoise (reads), commit (the t = 0 context pass), refresh_garment, withdraw_history,
  disentangle_reference, switch_garment (= the three, each switchable), shift_positions (moves every key along
  the RoPE frame axis, so a stream never runs out of table positions). `Ops(model)` jit-compiles them once,
  optionally donating the cache buffers. `check_edit` checks a custom edit against the protocol of
  `fc_jax.kv_edits` (pure, static shapes, one compile, donatable, invariants kept).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.models import dit
from fc_jax.models.attention import cached_chunks_layout
from fc_jax.models.rope import shift_frames
from fc_jax import flow


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """Static geometry of a cache. Frames are latent frames; a chunk is `chunk_frames` of them.

    window_frames counts every frame a chunk may attend to (conditions + history + itself), as the authors'
    `local_attn_size`; sink_frames counts the conditions plus the sink chunks (authors: 23 and 5). rope_theta is
    the RoPE base the stored keys are rotated with (the model's), for `shift_positions`.
    """

    tokens_per_frame: int
    chunk_frames: int = 3
    cond_frames: int = dit.NUM_CONDITION_FRAMES
    window_frames: int = 23
    sink_frames: int = 5
    rope_theta: float = 10000.0

    def __post_init__(self):
        history = self.window_frames - self.cond_frames - self.chunk_frames
        sink = self.sink_frames - self.cond_frames
        if history <= 0 or history % self.chunk_frames or sink < 0 or sink % self.chunk_frames or sink >= history:
            raise ValueError(
                f"window_frames={self.window_frames} and sink_frames={self.sink_frames} must leave, after the "
                f"{self.cond_frames} condition frames and the current chunk, a whole number (>= 1) of "
                f"{self.chunk_frames}-frame history chunks, with the sink chunks fewer than the history chunks"
            )

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_frames * self.tokens_per_frame

    @property
    def cond_tokens(self) -> int:
        return self.cond_frames * self.tokens_per_frame

    @property
    def history_chunks(self) -> int:
        return (self.window_frames - self.cond_frames - self.chunk_frames) // self.chunk_frames

    @property
    def sink_chunks(self) -> int:
        return (self.sink_frames - self.cond_frames) // self.chunk_frames

    @property
    def buffer_tokens(self) -> int:
        return self.cond_tokens + (self.history_chunks + 1) * self.chunk_tokens

    @classmethod
    def from_config(cls, config, latent_h: int, latent_w: int) -> "CacheSpec":
        """From a config's `student` section (chunk_frames, window_frames, sink_frames) and a latent size."""
        s = config.student
        pt, ph, pw = config.model.patch_size
        return cls((latent_h // ph) * (latent_w // pw), s.chunk_frames, dit.NUM_CONDITION_FRAMES,
                   s.window_frames, s.sink_frames, float(config.model.get("rope_theta", 10000.0)))


@flax.struct.dataclass
class KVCache:
    """Everything the student remembers between chunks. Arrays only, static shapes.

    k, v:               [L, B, S, N, H] self-attention keys (after RoPE) and values, S = spec.buffer_tokens
    cross_k, cross_v:   [L, B, Lt, N, H] text cross-attention keys and values
    reference, garment: [B, 1, h, w, C] the condition latents the condition block was built from
    num_chunks:         int32 [] chunks committed in the current segment (since prefill or a withdraw)
    next_frame:         int32 [] absolute RoPE frame index of the next chunk's first frame
    prefilled:          bool [] whether `prefill` has run
    cond_frame:         int32 [] RoPE frame of the condition block's reference frame (0 after prefill; moved
                        with every key by `shift_positions`, so it may be negative)
    """

    k: jax.Array
    v: jax.Array
    cross_k: jax.Array
    cross_v: jax.Array
    reference: jax.Array
    garment: jax.Array
    num_chunks: jax.Array
    next_frame: jax.Array
    prefilled: jax.Array
    cond_frame: jax.Array
    spec: CacheSpec = flax.struct.field(pytree_node=False)

    def valid_history_chunks(self):
        return jnp.minimum(self.num_chunks, self.spec.history_chunks)

    def write_offset(self):
        """Token offset where the current chunk's K/V go while it is denoised (right after the valid history)."""
        return self.spec.cond_tokens + self.valid_history_chunks() * self.spec.chunk_tokens

    def commit_slot(self):
        """History slot of the chunk being committed: in order while filling, then the ring past the sink."""
        s = self.spec
        ring = s.history_chunks - s.sink_chunks
        c = self.num_chunks
        return jnp.where(c < s.history_chunks, c, s.sink_chunks + (c - s.sink_chunks) % ring)

    def slot_segments(self):
        """Commit order, within the segment, of the chunk in each history slot [history_chunks] int32 (the
        inverse of `commit_slot`; meaningful for the valid slots): in order while filling, the sink slots
        always their first chunks, a ring slot its latest."""
        s = self.spec
        ring = s.history_chunks - s.sink_chunks
        slot = jnp.arange(s.history_chunks, dtype=jnp.int32)
        n = self.num_chunks
        return jnp.where((n <= s.history_chunks) | (slot < s.sink_chunks), slot, n - 1 - (n - 1 - slot) % ring)


def init_cache(model: dit.WanDiT, spec: CacheSpec, batch: int, latent_h: int, latent_w: int) -> KVCache:
    """An empty (not prefilled) cache in the model's compute dtype."""
    cfg = model.cfg
    dt = jnp.dtype(cfg.dtype)
    kv = lambda: jnp.zeros((cfg.num_layers, batch, spec.buffer_tokens, cfg.num_heads, cfg.head_dim), dt)
    cross = lambda: jnp.zeros((cfg.num_layers, batch, cfg.text_len, cfg.num_heads, cfg.head_dim), dt)
    lat = lambda: jnp.zeros((batch, 1, latent_h, latent_w, cfg.in_channels), jnp.float32)
    zero = lambda: jnp.zeros((), jnp.int32)
    # Distinct buffers for every field, so the whole cache can be donated.
    return KVCache(kv(), kv(), cross(), cross(), lat(), lat(), zero(), zero(), jnp.zeros((), bool), zero(), spec)


def _write_tokens(buffer, values, offset):
    """buffer [L, B, S, N, H] with values [L, B, T, N, H] written at token `offset`."""
    return jax.lax.dynamic_update_slice_in_dim(buffer, values.astype(buffer.dtype), offset, axis=2)


def _condition_pass(model, params, cache: KVCache, reference, garment, context=None):
    """K/V of the condition block: [reference, garment] at RoPE frames 0, 1 and t = 0, attending only to itself."""
    if cache.spec.rope_theta != model.cfg.rope_theta:
        raise ValueError(f"the cache spec's rope_theta {cache.spec.rope_theta} is not the model's "
                         f"{model.cfg.rope_theta}; build the spec with CacheSpec.from_config")
    latents = jnp.concatenate([reference, garment], axis=1).astype(jnp.float32)
    b = latents.shape[0]
    t = jnp.zeros((b, dit.NUM_CONDITION_FRAMES), jnp.float32)
    layer_cache = None if context is not None else {"cross_k": cache.cross_k, "cross_v": cache.cross_v}
    _, kv = model.apply({"params": params}, latents, t, context, np.arange(dit.NUM_CONDITION_FRAMES),
                        cache=layer_cache, return_kv=True)
    return kv


def prefill(model, params, cache: KVCache, reference, garment, context) -> KVCache:
    """Start a stream: condition block and text K/V written, history empty, next chunk at RoPE frame 2."""
    kv = _condition_pass(model, params, cache, reference, garment, context)
    return cache.replace(
        k=_write_tokens(cache.k, kv["k"], 0),
        v=_write_tokens(cache.v, kv["v"], 0),
        cross_k=kv["cross_k"].astype(cache.cross_k.dtype),
        cross_v=kv["cross_v"].astype(cache.cross_v.dtype),
        reference=reference.astype(cache.reference.dtype),
        garment=garment.astype(cache.garment.dtype),
        num_chunks=jnp.zeros((), jnp.int32),
        next_frame=jnp.asarray(cache.spec.cond_frames, jnp.int32),
        prefilled=jnp.ones((), bool),
        cond_frame=jnp.zeros((), jnp.int32),
    )


def chunk_forward(model, params, cache: KVCache, x, t, return_kv: bool, mutable=False):
    """The model on one chunk x [B, chunk_frames, h, w, C] at per-sample t [B], attending over the cache: the
    flow prediction (and with `return_kv` the chunk's K/V), with `mutable` (flax's) also the collections."""
    spec = cache.spec
    b, f = x.shape[:2]
    if f != spec.chunk_frames:
        raise ValueError(f"a chunk has {spec.chunk_frames} latent frames; got {f} (shape {x.shape})")
    offset = cache.write_offset()
    positions = cache.next_frame + jnp.arange(f, dtype=jnp.int32)
    timesteps = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1, 1), (b, f))
    layer_cache = {"k": cache.k, "v": cache.v, "cross_k": cache.cross_k, "cross_v": cache.cross_v}
    return model.apply(
        {"params": params}, x, timesteps, None, positions,
        kv_lengths=jnp.full((b,), offset + spec.chunk_tokens, jnp.int32),
        cache=layer_cache, write_at=offset, return_kv=return_kv, mutable=mutable,
    )


def denoise(model, params, cache: KVCache, x_t, t, sigma=None):
    """x0 prediction [B, chunk_frames, h, w, C] for the noisy chunk x_t at timestep t (scalar or [B]); the
    x0 conversion uses σ = t/1000 unless `sigma` is given (see `flow.student_schedule`)."""
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x_t.shape[0],))
    if sigma is not None:
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x_t.shape[0],))
    v = chunk_forward(model, params, cache, x_t, t, return_kv=False)
    return flow.x0_from_flow(x_t.astype(jnp.float32), v, t, sigma)


def denoise_chunks(model, params, cache: KVCache, x_t, t, sigma=None, context=None, straight_through: bool = False):
    """x0 predictions [B, n·chunk_frames, h, w, C] of n consecutive noisy chunks x_t (all at timestep t, scalar or
    [B]) in one forward, chunk i attending over the condition block, the history chunks before it and itself:
    what `denoise` gives chunk i on the cache as it was when chunk i was made. The cache holds exactly the first
    n − 1 chunks of its segment, committed in order (nothing evicted).

    context [B, Lt, text_dim]: the text cross-attention K/V are recomputed from it (so they carry gradient)
    instead of read from the cache. straight_through: the history chunks' cached K/V pass their gradient to
    chunks 0 .. n − 2's own K/V of this forward, their forward values unchanged (`dit.CachePrefix`); else the
    cache carries none.
    """
    spec = cache.spec
    b, f = x_t.shape[:2]
    n = f // spec.chunk_frames
    if f % spec.chunk_frames or not 1 <= n <= spec.history_chunks + 1:
        raise ValueError(f"denoise_chunks takes 1 to {spec.history_chunks + 1} chunks of {spec.chunk_frames} latent "
                         f"frames (the cache's history chunks and the current one); got {f} frames")
    if not isinstance(cache.num_chunks, jax.core.Tracer) and int(cache.num_chunks) != n - 1:
        raise ValueError(f"denoise_chunks of {n} chunks needs a cache holding the first {n - 1} chunks of its "
                         f"segment; it holds {int(cache.num_chunks)}")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
    if sigma is not None:
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
    positions = cache.next_frame - (n - 1) * spec.chunk_frames + jnp.arange(f, dtype=jnp.int32)
    prefix = dit.CachePrefix(spec.cond_tokens + (n - 1) * spec.chunk_tokens,
                             spec.cond_tokens if straight_through else None)
    layer_cache = {"k": cache.k, "v": cache.v}
    if context is None:
        layer_cache.update(cross_k=cache.cross_k, cross_v=cache.cross_v)
    v = model.apply({"params": params}, x_t, jnp.broadcast_to(t[:, None], (b, f)), context, positions,
                    cached_chunks_layout(n, spec.chunk_frames, spec.tokens_per_frame, spec.cond_frames),
                    cache=layer_cache, cache_prefix=prefix)
    return flow.x0_from_flow(x_t.astype(jnp.float32), v, t, sigma)


def commit(model, params, cache: KVCache, clean_chunk) -> KVCache:
    """The t = 0 context pass: write the clean chunk's K/V into its history slot and advance."""
    spec = cache.spec
    _, kv = chunk_forward(model, params, cache, clean_chunk, jnp.zeros((clean_chunk.shape[0],)), return_kv=True)
    offset = spec.cond_tokens + cache.commit_slot() * spec.chunk_tokens
    return cache.replace(
        k=_write_tokens(cache.k, kv["k"], offset),
        v=_write_tokens(cache.v, kv["v"], offset),
        num_chunks=cache.num_chunks + 1,
        next_frame=cache.next_frame + spec.chunk_frames,
    )


def _replace_condition(model, params, cache: KVCache, reference, garment) -> KVCache:
    kv = _condition_pass(model, params, cache, reference, garment)
    return cache.replace(
        k=_write_tokens(cache.k, shift_frames(kv["k"], cache.cond_frame, cache.spec.rope_theta), 0),
        v=_write_tokens(cache.v, kv["v"], 0),
        reference=reference.astype(cache.reference.dtype),
        garment=garment.astype(cache.garment.dtype),
    )


def refresh_garment(model, params, cache: KVCache, garment) -> KVCache:
    """Garment KV refresh: recompute the condition block with the new garment (reference kept)."""
    return _replace_condition(model, params, cache, cache.reference, garment)


def disentangle_reference(model, params, cache: KVCache, reference) -> KVCache:
    """Reference KV disentangle: recompute the condition block with `reference` (the last generated frame,
    re-encoded as a single image by the caller) in place of the original reference."""
    return _replace_condition(model, params, cache, reference, cache.garment)


def withdraw_history(cache: KVCache, keep_frames: int = 0, rebase: bool = False) -> KVCache:
    """Historical KV withdraw: keep only the `keep_frames` most recent history frames (a multiple of the chunk).

    The kept chunks move to the front of the history (oldest first) and start a new segment, so the oldest kept
    chunk becomes the sink. `rebase` (only with keep_frames=0) restarts RoPE positions: the condition block back
    at frames 0, 1 (turned back by `cond_frame` frames if `shift_positions` moved it) and the next chunk at
    frame 2, exactly like the first chunk after a fresh prefill.
    """
    spec = cache.spec
    if keep_frames % spec.chunk_frames or not 0 <= keep_frames <= spec.history_chunks * spec.chunk_frames:
        raise ValueError(
            f"keep_frames must be a multiple of {spec.chunk_frames} in [0, "
            f"{spec.history_chunks * spec.chunk_frames}]; got {keep_frames}"
        )
    if rebase and keep_frames:
        raise ValueError("rebase needs keep_frames=0: kept chunks carry their RoPE positions in their keys")
    keep = keep_frames // spec.chunk_frames
    kept = jnp.minimum(cache.num_chunks, keep)
    k, v = cache.k, cache.v
    if keep:
        # Segment indices of the kept chunks, oldest first; their slots, gathered into slots 0..keep-1.
        order = cache.num_chunks - kept + jnp.arange(keep)
        slots = jax.vmap(lambda c: cache.replace(num_chunks=c).commit_slot())(order)
        token_index = spec.cond_tokens + (slots[:, None] * spec.chunk_tokens + jnp.arange(spec.chunk_tokens)).reshape(-1)
        k = _write_tokens(k, jnp.take(k, token_index, axis=2), spec.cond_tokens)
        v = _write_tokens(v, jnp.take(v, token_index, axis=2), spec.cond_tokens)
    if rebase:
        cond = shift_frames(k[:, :, : spec.cond_tokens], -cache.cond_frame, spec.rope_theta)
        k = _write_tokens(k, cond, 0)
        return cache.replace(k=k, v=v, num_chunks=kept, next_frame=jnp.asarray(spec.cond_frames, jnp.int32),
                             cond_frame=jnp.zeros((), jnp.int32))
    return cache.replace(k=k, v=v, num_chunks=kept)


def shift_positions(cache: KVCache, offset) -> KVCache:
    """Move the whole cache `offset` RoPE frames (an int32 scalar, may be traced; negative moves back): every
    stored key is turned along the frame axis (`rope.shift_frames`; keys are stored after RoPE, the condition
    block's and the history's alike), and `next_frame` and `cond_frame` move with them. Values, text K/V and
    the segment are unchanged.

    Exact up to fp32 rounding (and the cache dtype's, when it is lower): attention scores depend only on the
    relative positions of queries and keys, and these stay. A stream calls it before its next chunk would read
    past the RoPE table (`rope_max_positions`), e.g. with offset = 2 - next_frame, so it never runs out of
    positions. Turns one layer at a time (no fp32 copy of the whole cache)."""
    offset = jnp.asarray(offset, jnp.int32)
    k = jax.lax.map(lambda layer: shift_frames(layer, offset, cache.spec.rope_theta), cache.k)
    return cache.replace(k=k, next_frame=cache.next_frame + offset, cond_frame=cache.cond_frame + offset)


def switch_garment(
    model,
    params,
    cache: KVCache,
    garment,
    reference=None,
    *,
    refresh: bool = True,
    withdraw: bool = True,
    disentangle: bool = True,
    keep_frames: int = 0,
    rebase: bool = False,
) -> KVCache:
    """The paper's garment switch: refresh the garment K/V, withdraw the history that carries the old garment,
    and disentangle the reference (the last generated frame, re-encoded, replaces the original). Each part can be
    switched off for ablations; the condition block is recomputed once for whichever of refresh / disentangle
    is on."""
    if disentangle and reference is None:
        raise ValueError("disentangle=True needs the re-encoded last frame as `reference`")
    if refresh or disentangle:
        cache = _replace_condition(
            model, params, cache,
            reference if disentangle else cache.reference,
            garment if refresh else cache.garment,
        )
    if withdraw:
        cache = withdraw_history(cache, keep_frames, rebase)
    return cache


@functools.lru_cache(maxsize=None)
def jit_op(fn, model: dit.WanDiT, donate: bool = False, static: tuple[str, ...] = ()):
    """`fn(model, ...)` jit-compiled with `model` bound, the cache donated if asked. Cached per (fn, model,
    donate), so every session or `Ops` of the same model shares one compiled function."""
    return jax.jit(functools.partial(fn, model), static_argnames=static,
                   donate_argnames=("cache",) if donate else ())


class Ops:
    """The cache operations for one model, each jit-compiled once. With `donate=True` the input cache's
    buffers are donated (updated in place; the input cache must not be used again) — what a streaming session
    wants; with `donate=False` every operation leaves its input intact."""

    def __init__(self, model: dit.WanDiT, donate: bool = False):
        self.model = model
        self.prefill = jit_op(prefill, model, donate)
        self.denoise = jit_op(denoise, model, False)
        self.commit = jit_op(commit, model, donate)
        self.refresh_garment = jit_op(refresh_garment, model, donate)
        self.disentangle_reference = jit_op(disentangle_reference, model, donate)
        self.switch_garment = jit_op(
            switch_garment, model, donate, ("refresh", "withdraw", "disentangle", "keep_frames", "rebase")
        )
        self.withdraw_history = _jitted_withdraw(donate)
        self.shift_positions = _jitted_shift(donate)


@functools.lru_cache(maxsize=None)
def _jitted_withdraw(donate: bool):
    return jax.jit(withdraw_history, static_argnames=("keep_frames", "rebase"),
                   donate_argnames=("cache",) if donate else ())


@functools.lru_cache(maxsize=None)
def _jitted_shift(donate: bool):
    return jax.jit(shift_positions, donate_argnames=("cache",) if donate else ())


# -- the checker for custom edits (the protocol: fc_jax.kv_edits) ----------------------------------------------

class EditCheckError(ValueError):
    """An edit broke the protocol; `failures` maps each failed check to what was found."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        super().__init__("the edit breaks the KV-edit protocol:\n" +
                         "\n".join(f"  {name}: {why}" for name, why in failures.items()))


def _snapshot(cache) -> list[np.ndarray]:
    return [np.array(leaf, copy=True) for leaf in jax.tree.leaves(cache)]


def _same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                                      for x, y in zip(la, lb))


def _abstract(cache):
    return jax.tree.structure(cache), [(np.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(cache)]


def _invariant_failures(before: KVCache, after: KVCache, rope_max_positions: int) -> list[str]:
    s = after.spec
    n, nxt, cond = int(after.num_chunks), int(after.next_frame), int(after.cond_frame)
    found = []
    if n < 0:
        found.append(f"num_chunks {n} < 0")
    if bool(after.prefilled) != bool(before.prefilled):
        found.append(f"prefilled changed from {bool(before.prefilled)} to {bool(after.prefilled)}")
    kept = s.cond_frames + min(n, s.history_chunks) * s.chunk_frames
    if nxt - cond < kept:
        found.append(f"next_frame {nxt} is not after the condition block (frame {cond}) and the {min(n, s.history_chunks)} "
                     f"valid history chunks: the next chunk would sit at a position already taken")
    if nxt + s.chunk_frames > rope_max_positions:
        found.append(f"the next chunk (frames {nxt}..{nxt + s.chunk_frames - 1}) reads past the RoPE table "
                     f"({rope_max_positions} positions)")
    return found


def check_edit(edit: Callable, model, params, cache: KVCache, **kwargs) -> dict[str, str]:
    """Check `edit(model, params, cache, **kwargs)` against the protocol on this cache; every check runs and
    EditCheckError lists each one that fails. Returns {check: "ok"} when all pass:
      runs          it runs eagerly on this cache and these arguments (else nothing else is checked)
      traceable     it runs under jax.jit (no concrete reads of traced values)
      static        the output is a KVCache with the input's tree, spec, shapes and dtypes
      pure          the input cache is unchanged, two eager calls agree exactly and agree with the jitted one
      compiles_once the jitted edit applied again to its own output is not traced again
      donatable     jitted with the cache donated, it gives the same cache
      invariants    num_chunks >= 0, prefilled kept, the next chunk after the condition block and the kept
                    history and inside the RoPE table
    Runs the edit a few times (eagerly and jitted); the cache is copied first, never donated itself."""
    failures: dict[str, str] = {}
    before = _snapshot(cache)
    traces = []

    def counted(c, kw):
        traces.append(1)
        return edit(model, params, c, **kw)

    jitted = jax.jit(counted)
    try:
        out_jit = jitted(cache, kwargs)
    except Exception as e:  # noqa: BLE001 - what the edit raised is the finding
        failures["traceable"] = f"{type(e).__name__}: {e}"
        out_jit = None
    try:
        out_1 = edit(model, params, cache, **kwargs)
        out_2 = edit(model, params, cache, **kwargs)
    except Exception as e:  # noqa: BLE001
        failures["runs"] = f"{type(e).__name__}: {e}"
        raise EditCheckError(failures) from e
    if not _same(before, _snapshot(cache)):
        failures["pure"] = "the input cache changed"
    elif not _same(out_1, out_2):
        failures["pure"] = "two calls on the same input gave different caches (state kept between calls?)"
    elif out_jit is not None and not all(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
                                         for a, b in zip(jax.tree.leaves(out_jit), jax.tree.leaves(out_1))):
        failures["pure"] = "the jitted edit and the eager one gave different caches"
    if not isinstance(out_1, KVCache):
        failures["static"] = f"returned {type(out_1).__name__}, not a KVCache"
    elif out_1.spec != cache.spec:
        failures["static"] = f"the spec changed: {cache.spec} -> {out_1.spec}"
    elif _abstract(out_1) != _abstract(cache):
        changed = [f"{jax.tree_util.keystr(p)} {np.shape(a)} {jnp.result_type(a)} -> {np.shape(b)} {jnp.result_type(b)}"
                   for (p, a), b in zip(jax.tree_util.tree_flatten_with_path(cache)[0], jax.tree.leaves(out_1))
                   if (np.shape(a), jnp.result_type(a)) != (np.shape(b), jnp.result_type(b))]
        failures["static"] = "shapes or dtypes changed: " + ", ".join(changed)
    if out_jit is not None and "static" not in failures:
        try:
            jitted(out_jit, kwargs)
            if len(traces) > 1:
                failures["compiles_once"] = (f"traced {len(traces)} times for two calls of the same shapes (its "
                                             "output's types differ from its input's, e.g. a weak-typed Python "
                                             "scalar, or a changed static field)")
        except Exception as e:  # noqa: BLE001
            failures["compiles_once"] = f"applying it to its own output failed: {type(e).__name__}: {e}"
        copy = jax.tree.map(jnp.array, cache)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            donated = jax.jit(counted, donate_argnums=0)(copy, kwargs)
        unusable = [str(w.message) for w in caught if "donated" in str(w.message).lower()]
        if unusable:
            failures["donatable"] = unusable[0]
        elif not _same(donated, out_jit):
            failures["donatable"] = "with the cache donated it gave a different cache"
    if isinstance(out_1, KVCache) and "static" not in failures:
        found = _invariant_failures(cache, out_1, model.cfg.rope_max_positions)
        if found:
            failures["invariants"] = "; ".join(found)
    if failures:
        raise EditCheckError(failures)
    return {name: "ok" for name in ("runs", "traceable", "static", "pure", "compiles_once", "donatable", "invariants")}
