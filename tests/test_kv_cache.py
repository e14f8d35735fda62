"""The KV cache: cached chunk-by-chunk generation equals the full block-causal forward; rescheduling equals
fresh prefills; eviction equals the window mask; every operation is pure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import kv_cache as kvc
from fc_jax.models.attention import streaming_layout
from fc_jax import flow

H, W = 4, 6  # latent grid -> 2 x 3 = 6 tokens per frame
TPF = 6


@pytest.fixture(scope="module")
def setup(tiny_dit):
    config, model, params = tiny_dit
    keys = jax.random.split(jax.random.key(2), 6)
    lat = lambda k, f: jax.random.normal(k, (1, f, H, W, 48))
    data = dict(
        reference=lat(keys[0], 1), garment=lat(keys[1], 1), garment2=lat(keys[2], 1),
        chunks=lat(keys[3], 21), noise=lat(keys[4], 3), context=jax.random.normal(keys[5], (1, 16, 32)),
    )
    return config, model, params, data


def _full_forward(model, params, d, video, timesteps, layout, return_kv=False, reference=None, garment=None):
    """The block-causal forward over [reference, garment, video...] with per-frame timesteps."""
    ref = d["reference"] if reference is None else reference
    gar = d["garment"] if garment is None else garment
    latents = jnp.concatenate([ref, gar, video], axis=1)
    t = jnp.concatenate([jnp.zeros((1, 2)), timesteps], axis=1)
    fn = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, d["context"], np.arange(x.shape[1]), layout,
                                             return_kv=return_kv))
    return fn(params, latents, t)


def _stream(model, params, d, spec, num_chunks, ops=None):
    ops = ops or kvc.Ops(model)
    cache = kvc.init_cache(model, spec, 1, H, W)
    cache = ops.prefill(params, cache, d["reference"], d["garment"], d["context"])
    for i in range(num_chunks):
        cache = ops.commit(params, cache, d["chunks"][:, 3 * i : 3 * i + 3])
    return cache, ops


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def test_cached_generation_equals_the_full_block_causal_forward(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)  # 3 history chunks: no eviction for 4 chunks
    cache, ops = _stream(model, params, d, spec, 3)
    t = 833.0
    x_t = flow.add_noise(d["chunks"][:, 9:12], d["noise"], jnp.array([t]))
    x0 = ops.denoise(params, cache, x_t, t)

    video = jnp.concatenate([d["chunks"][:, :9], x_t], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((1, 9)), jnp.full((1, 3), t)], axis=1)
    layout = streaming_layout(4, 3, TPF)
    v = _full_forward(model, params, d, video, timesteps, layout)[:, -3:]
    assert _rel(x0, flow.x0_from_flow(x_t, v, jnp.array([t]))) <= 1e-5

    # The committed K/V equal the full forward's K/V of the clean chunks (t = 0), layer by layer.
    _, kv = _full_forward(model, params, d, d["chunks"][:, :9], jnp.zeros((1, 9)), streaming_layout(3, 3, TPF),
                          return_kv=True)
    valid = spec.cond_tokens + 3 * spec.chunk_tokens
    assert _rel(cache.k[:, :, :valid], kv["k"]) <= 1e-5
    assert _rel(cache.v[:, :, :valid], kv["v"]) <= 1e-5
    assert int(cache.num_chunks) == 3 and int(cache.next_frame) == 11


def test_eviction_keeps_the_sink_and_equals_the_window_mask(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)  # history 3 chunks: sink 1 + ring 2
    first, _ = _stream(model, params, d, spec, 1)
    cache, ops = _stream(model, params, d, spec, 6)
    # The sink (chunk 0) is still in slot 0, untouched by five later commits.
    sink = slice(spec.cond_tokens, spec.cond_tokens + spec.chunk_tokens)
    np.testing.assert_array_equal(np.asarray(cache.k[:, :, sink]), np.asarray(first.k[:, :, sink]))

    t = 625.0
    x_t = flow.add_noise(d["chunks"][:, 18:21], d["noise"], jnp.array([t]))
    x0 = ops.denoise(params, cache, x_t, t)
    video = jnp.concatenate([d["chunks"][:, :18], x_t], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((1, 18)), jnp.full((1, 3), t)], axis=1)
    layout = streaming_layout(7, 3, TPF, sink_chunks=1, window_chunks=2)  # chunk 6 sees c0, c4, c5
    v = _full_forward(model, params, d, video, timesteps, layout)[:, -3:]
    assert _rel(x0, flow.x0_from_flow(x_t, v, jnp.array([t]))) <= 1e-5
    # ...and differs from attending to everything (the window matters).
    v_all = _full_forward(model, params, d, video, timesteps, streaming_layout(7, 3, TPF))[:, -3:]
    assert _rel(x0, flow.x0_from_flow(x_t, v_all, jnp.array([t]))) > 1e-3


def test_withdraw_with_rebase_and_new_condition_equals_a_fresh_stream(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    cache, ops = _stream(model, params, d, spec, 4)
    new_ref = d["chunks"][:, 11:12]  # stands in for the re-encoded last frame
    switched = ops.switch_garment(params, cache, d["garment2"], new_ref, rebase=True)
    fresh = ops.prefill(params, kvc.init_cache(model, spec, 1, H, W), new_ref, d["garment2"], d["context"])
    assert int(switched.next_frame) == int(fresh.next_frame) == 2 and int(switched.num_chunks) == 0
    x_t = flow.add_noise(d["chunks"][:, :3], d["noise"], jnp.array([1000.0]))
    a = ops.denoise(params, switched, x_t, 1000.0)
    b = ops.denoise(params, fresh, x_t, 1000.0)
    assert _rel(a, b) <= 1e-5
    # Same for the committed K/V of that chunk.
    a_kv = ops.commit(params, switched, d["chunks"][:, :3])
    b_kv = ops.commit(params, fresh, d["chunks"][:, :3])
    valid = spec.cond_tokens + spec.chunk_tokens
    assert _rel(a_kv.k[:, :, :valid], b_kv.k[:, :, :valid]) <= 1e-5


def test_refresh_garment_equals_a_cache_built_with_the_new_garment_and_the_same_history(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    cache, ops = _stream(model, params, d, spec, 2)
    refreshed = ops.refresh_garment(params, cache, d["garment2"])
    fresh = ops.prefill(params, kvc.init_cache(model, spec, 1, H, W), d["reference"], d["garment2"], d["context"])
    c = spec.cond_tokens
    built = cache.replace(
        k=cache.k.at[:, :, :c].set(fresh.k[:, :, :c]), v=cache.v.at[:, :, :c].set(fresh.v[:, :, :c]),
        garment=d["garment2"],
    )
    x_t = flow.add_noise(d["chunks"][:, 6:9], d["noise"], jnp.array([937.5]))
    assert _rel(ops.denoise(params, refreshed, x_t, 937.5), ops.denoise(params, built, x_t, 937.5)) <= 1e-5
    # History untouched; condition block changed.
    np.testing.assert_array_equal(np.asarray(refreshed.k[:, :, c:]), np.asarray(cache.k[:, :, c:]))
    assert _rel(refreshed.k[:, :, :c], cache.k[:, :, :c]) > 1e-3


def test_withdraw_keeping_frames_moves_the_most_recent_chunks_to_the_front(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    cache, ops = _stream(model, params, d, spec, 5)  # slots now hold c0 (sink), c3, c4 (ring wrapped)
    kept = ops.withdraw_history(cache, keep_frames=6)
    assert int(kept.num_chunks) == 2 and int(kept.next_frame) == int(cache.next_frame)
    c, ct = spec.cond_tokens, spec.chunk_tokens
    slot = lambda cache, i: np.asarray(cache.k[:, :, c + i * ct : c + (i + 1) * ct])
    ring = {int(kvc.KVCache.commit_slot(cache.replace(num_chunks=jnp.int32(n)))): n for n in (3, 4)}
    inverse = {n: s for s, n in ring.items()}
    np.testing.assert_array_equal(slot(kept, 0), slot(cache, inverse[3]))
    np.testing.assert_array_equal(slot(kept, 1), slot(cache, inverse[4]))


def test_shift_frames_equals_rope_at_the_shifted_position():
    from fc_jax.models.rope import apply_rope, grid_positions, rope_cos_sin, shift_frames

    x = jax.random.normal(jax.random.key(4), (2, 6, 2, 32))  # [B, T = 3 frames x 1 x 2, N, head_dim]
    at = lambda frames: apply_rope(x, *rope_cos_sin(grid_positions(np.asarray(frames), 1, 2), 32))
    keys = at([3, 4, 5])
    for offset in (700, -3, 1000):
        assert _rel(shift_frames(keys, offset), at([3 + offset, 4 + offset, 5 + offset])) <= 1e-6, offset
    # A large offset (every digit of the composed rotation) and back: the same keys, to fp32 rounding.
    far = shift_frames(shift_frames(keys, 2**30 + 12345), -(2**30 + 12345 - 700))
    assert _rel(far, at([703, 704, 705])) <= 1e-5
    np.testing.assert_array_equal(np.asarray(shift_frames(keys, 0)), np.asarray(keys))  # 0: bit for bit


def test_a_shifted_cache_denoises_commits_and_switches_like_the_unshifted_one(setup):
    """Moving every cached key `offset` RoPE frames (and next_frame with them) changes no attention score: the
    denoise output, the committed K/V (moved by the same offset), a garment refresh and a rebased switch all equal
    those of the unshifted cache."""
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    cache, ops = _stream(model, params, d, spec, 4)  # the ring has wrapped: sink c0, then c2, c3
    t = 750.0
    x_t = flow.add_noise(d["chunks"][:, 12:15], d["noise"], jnp.array([t]))
    want = ops.denoise(params, cache, x_t, t)
    committed = ops.commit(params, cache, d["chunks"][:, 12:15])
    valid = spec.cond_tokens + 3 * spec.chunk_tokens
    for offset in (2 - int(cache.next_frame), 900):  # back to frame 2 (what a stream does), and forward
        shifted = ops.shift_positions(cache, offset)
        assert int(shifted.next_frame) == int(cache.next_frame) + offset and int(shifted.cond_frame) == offset
        assert _rel(ops.denoise(params, shifted, x_t, t), want) <= 1e-5, offset
        got = ops.commit(params, shifted, d["chunks"][:, 12:15])
        moved = ops.shift_positions(committed, offset)
        assert _rel(got.k[:, :, :valid], moved.k[:, :, :valid]) <= 1e-5, offset
        assert _rel(got.v[:, :, :valid], committed.v[:, :, :valid]) <= 1e-5, offset
        assert int(got.next_frame) == int(committed.next_frame) + offset
        # The keys really moved: a shift is not the identity on them.
        assert _rel(shifted.k[:, :, :valid], cache.k[:, :, :valid]) > 1e-2
        # A refresh after the shift recomputes the condition block at the shifted frames.
        refreshed = ops.refresh_garment(params, shifted, d["garment2"])
        expected = ops.denoise(params, ops.refresh_garment(params, cache, d["garment2"]), x_t, t)
        assert _rel(ops.denoise(params, refreshed, x_t, t), expected) <= 1e-5, offset
    # A rebased switch of a shifted cache equals a fresh prefill (the condition block back at frames 0, 1).
    shifted = ops.shift_positions(cache, 2 - int(cache.next_frame))
    switched = ops.switch_garment(params, shifted, d["garment2"], d["chunks"][:, 11:12], rebase=True)
    fresh = ops.prefill(params, kvc.init_cache(model, spec, 1, H, W), d["chunks"][:, 11:12], d["garment2"],
                        d["context"])
    assert int(switched.next_frame) == 2 and int(switched.cond_frame) == 0
    assert _rel(switched.k[:, :, : spec.cond_tokens], fresh.k[:, :, : spec.cond_tokens]) <= 1e-5
    assert _rel(ops.denoise(params, switched, x_t, t), ops.denoise(params, fresh, x_t, t)) <= 1e-5


def test_operations_are_pure(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    cache, ops = _stream(model, params, d, spec, 2)
    before = jax.tree.map(np.array, cache)
    ops.commit(params, cache, d["chunks"][:, 6:9])
    ops.denoise(params, cache, d["noise"], 500.0)
    ops.switch_garment(params, cache, d["garment2"], d["reference"], rebase=True)
    ops.withdraw_history(cache, keep_frames=3)
    ops.refresh_garment(params, cache, d["garment2"])
    ops.disentangle_reference(params, cache, d["garment2"])
    ops.shift_positions(cache, -5)
    after = jax.tree.map(np.array, cache)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_donating_ops_give_the_same_results(setup):
    _, model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    a, _ = _stream(model, params, d, spec, 3)
    b, _ = _stream(model, params, d, spec, 3, ops=kvc.Ops(model, donate=True))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_specs_and_arguments_are_named(setup):
    _, model, params, d = setup
    with pytest.raises(ValueError, match="whole number"):
        kvc.CacheSpec(TPF, window_frames=13)
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    with pytest.raises(ValueError, match="multiple of 3"):
        kvc.withdraw_history(kvc.init_cache(model, spec, 1, H, W), keep_frames=4)
    with pytest.raises(ValueError, match="rebase needs keep_frames=0"):
        kvc.withdraw_history(kvc.init_cache(model, spec, 1, H, W), keep_frames=3, rebase=True)
    with pytest.raises(ValueError, match="needs the re-encoded last frame"):
        kvc.switch_garment(model, params, kvc.init_cache(model, spec, 1, H, W), d["garment2"])


def test_teacher_forcing_layout_matches_cached_denoising_chunk_by_chunk(setup):
    """Stage 2's [clean ++ noisy] sequence under the teacher-forcing mask gives, for every noisy chunk, what the
    cache gives when that chunk is denoised after committing the clean chunks before it."""
    from fc_jax.models.attention import teacher_forcing_layout

    _, model, params, d = setup
    clean = d["chunks"][:, :9]
    t_blocks = jnp.array([1000.0, 833.0, 625.0])  # independent timestep per chunk
    noise = jax.random.normal(jax.random.key(9), clean.shape)
    noisy = flow.add_noise(clean, noise, jnp.repeat(t_blocks, 3)[None])
    cond = jnp.concatenate([d["reference"], d["garment"]], axis=1)
    latents = jnp.concatenate([cond, clean, cond, noisy], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((1, 11)), jnp.zeros((1, 2)), jnp.repeat(t_blocks, 3)[None]], axis=1)
    positions = np.concatenate([np.arange(11), np.arange(11)])
    layout = teacher_forcing_layout(3, 3, TPF)
    v = jax.jit(lambda p: model.apply({"params": p}, latents, timesteps, d["context"], positions, layout))(params)

    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    for k in range(3):
        cache, ops = _stream(model, params, d, spec, k)
        x_t = noisy[:, 3 * k : 3 * k + 3]
        expected = ops.denoise(params, cache, x_t, t_blocks[k])
        got = flow.x0_from_flow(x_t, v[:, 13 + 3 * k : 16 + 3 * k], t_blocks[k][None])
        assert _rel(got, expected) <= 1e-5, f"chunk {k}"


def test_teacher_forcing_layout_rules():
    from fc_jax.models.attention import teacher_forcing_layout

    layout = teacher_forcing_layout(2, 3, 1)  # frames: c c | 0 0 0 | 1 1 1 || c c | 0 0 0 | 1 1 1
    m = layout.dense()
    clean_cond, clean0, clean1 = [0, 1], [2, 3, 4], [5, 6, 7]
    noisy_cond, noisy0, noisy1 = [8, 9], [10, 11, 12], [13, 14, 15]
    seen = lambda q: set(np.nonzero(m[q])[0])
    assert seen(clean_cond[0]) == set(clean_cond)
    assert seen(clean1[0]) == set(clean_cond + clean0 + clean1)
    assert seen(noisy_cond[0]) == set(noisy_cond)
    assert seen(noisy0[0]) == set(clean_cond + noisy0)
    assert seen(noisy1[0]) == set(clean_cond + clean0 + noisy1)
