"""KV edits as plug-ins: check_edit passes the built-in edits and rejects each kind of broken one; the blend and
the selective withdraw meet their ends exactly; a withdrawn middle chunk equals the full forward without it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import flow
from fc_jax import kv_cache as kvc
from fc_jax import kv_edits
from fc_jax.models.attention import BlockLayout, streaming_layout

H, W, TPF = 4, 6, 6


@pytest.fixture(scope="module")
def setup(tiny_dit):
    _, model, params = tiny_dit
    keys = jax.random.split(jax.random.key(11), 6)
    lat = lambda k, f: jax.random.normal(k, (1, f, H, W, 48))
    d = dict(reference=lat(keys[0], 1), garment=lat(keys[1], 1), garment2=lat(keys[2], 1), chunks=lat(keys[3], 21),
             noise=lat(keys[4], 3), context=jax.random.normal(keys[5], (1, 16, 32)))
    ops = kvc.Ops(model)
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)  # 3 history slots: sink 1 + ring 2

    def stream(n):
        cache = ops.prefill(params, kvc.init_cache(model, spec, 1, H, W), d["reference"], d["garment"], d["context"])
        for i in range(n):
            cache = ops.commit(params, cache, d["chunks"][:, 3 * i : 3 * i + 3])
        return cache

    return model, params, d, ops, stream


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_check_edit_passes_the_built_in_edits(setup):
    model, params, d, _, stream = setup
    cache = stream(4)
    g, r = d["garment2"], d["reference"]
    cases = [
        (kvc.switch_garment, dict(garment=g, reference=r)),
        (kvc.refresh_garment, dict(garment=g)),
        (kv_edits.blend_garments, dict(garment_from=d["garment"], garment_to=g, alpha=0.25)),
        (kv_edits.gradual_switch_start, dict(garment_from=d["garment"], garment_to=g, reference=r, alpha=0.5)),
        (kv_edits.selective_withdraw, dict(slot_mass=jnp.array([0.1, 0.5, 0.2]), threshold=0.3)),
        (kv_edits.selective_switch, dict(garment=g, reference=r, threshold=0.05)),
        (kv_edits.reference_only_refresh, dict(garment=g, reference=r)),
    ]
    for edit, kwargs in cases:
        report = kvc.check_edit(edit, model, params, cache, **kwargs)
        assert set(report.values()) == {"ok"}, edit.__name__


def _failures(edit, setup):
    model, params, _, _, stream = setup
    with pytest.raises(kvc.EditCheckError) as info:
        kvc.check_edit(edit, model, params, stream(2))
    return info.value.failures


def test_check_edit_rejects_an_impure_edit(setup):
    def mutates_its_input(model, params, cache):
        object.__setattr__(cache, "num_chunks", cache.num_chunks * 0)
        return cache

    assert "changed" in _failures(mutates_its_input, setup)["pure"]
    calls = []

    def keeps_state(model, params, cache):  # withdraws on every other call
        calls.append(1)
        return kvc.withdraw_history(cache) if len(calls) % 2 else cache

    assert "different" in _failures(keeps_state, setup)["pure"]


def test_check_edit_rejects_a_shape_changing_edit(setup):
    def grows_the_buffer(model, params, cache):
        pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, cache.spec.chunk_tokens), (0, 0), (0, 0)))
        return cache.replace(k=pad(cache.k), v=pad(cache.v))

    assert "shapes or dtypes changed" in _failures(grows_the_buffer, setup)["static"]


def test_check_edit_rejects_an_edit_that_recompiles(setup):
    def python_counter(model, params, cache):  # a Python int: weak-typed, so its output retraces the jit
        return cache.replace(num_chunks=0)

    failures = _failures(python_counter, setup)
    assert "traced 2 times" in failures["compiles_once"]
    assert "static" not in failures  # same shapes and dtypes: only the retrace tells


def test_check_edit_rejects_an_edit_that_breaks_the_invariants(setup):
    def rewinds_positions(model, params, cache):
        return cache.replace(next_frame=cache.next_frame * 0)

    assert "not after the condition block" in _failures(rewinds_positions, setup)["invariants"]


def test_blend_at_its_ends_equals_the_single_garment_caches(setup):
    model, params, d, ops, stream = setup
    cache = stream(4)
    blend = jax.jit(kv_edits.blend_garments, static_argnums=0)
    for alpha, garment in ((0.0, d["garment"]), (1.0, d["garment2"])):
        got = blend(model, params, cache, d["garment"], d["garment2"], alpha)
        assert _same(got, ops.refresh_garment(params, cache, garment)), alpha
    half = blend(model, params, cache, d["garment"], d["garment2"], 0.5)
    n = cache.spec.cond_tokens
    for end in (ops.refresh_garment(params, cache, d["garment"]), ops.refresh_garment(params, cache, d["garment2"])):
        assert float(jnp.abs(half.k[:, :, :n] - end.k[:, :, :n]).max()) > 1e-3
        np.testing.assert_array_equal(half.k[:, :, n:], end.k[:, :, n:])  # the history is not touched
    start = jax.jit(kv_edits.gradual_switch_start, static_argnums=0)
    switched = jax.jit(kvc.switch_garment, static_argnums=0)(model, params, cache, d["garment2"], d["reference"])
    assert _same(start(model, params, cache, d["garment"], d["garment2"], d["reference"], 1.0), switched)


def test_selective_withdraw_ends_equal_full_and_no_withdraw(setup):
    model, params, _, _, stream = setup
    for n in (2, 6):  # filling, and after the ring wrapped
        cache = stream(n)
        mass = jnp.array([0.3, 0.1, 0.2])
        full = kv_edits.selective_withdraw(model, params, cache, mass, 0.0)
        assert _same(full, kvc.withdraw_history(cache, 0))
        none = kv_edits.selective_withdraw(model, params, cache, mass, 0.31)
        assert _same(none, cache)
    # Dropping all but the newest chunk keeps what withdraw_history(keep_frames=3) keeps.
    cache = stream(6)  # slots: c0 (sink), c5, c4
    some = kv_edits.withdraw_chunks(cache, jnp.array([True, False, True]))
    keep = kvc.withdraw_history(cache, 3)
    valid = cache.spec.cond_tokens + cache.spec.chunk_tokens
    assert int(some.num_chunks) == int(keep.num_chunks) == 1
    np.testing.assert_array_equal(some.k[:, :, :valid], keep.k[:, :, :valid])
    np.testing.assert_array_equal(some.v[:, :, :valid], keep.v[:, :, :valid])
    with pytest.raises(ValueError, match=r"drop must be \[history_chunks\] = \[3\]"):
        kv_edits.withdraw_chunks(cache, jnp.array([True, False]))


def test_withdrawing_a_middle_chunk_equals_the_full_forward_without_it(setup):
    model, params, d, ops, stream = setup
    cache = kv_edits.withdraw_chunks(stream(3), jnp.array([False, True, False]))  # c0, c2 kept
    assert int(cache.num_chunks) == 2
    t = 833.0
    x_t = flow.add_noise(d["chunks"][:, 9:12], d["noise"], jnp.array([t]))
    x0 = ops.denoise(params, cache, x_t, t)

    layout = streaming_layout(4, 3, TPF)
    allowed = layout.allowed.copy()
    allowed[4, 2] = False  # chunk 3 (block 4) no longer sees chunk 1 (block 2)
    layout = BlockLayout(layout.q_blocks, layout.k_blocks, allowed)
    video = jnp.concatenate([d["reference"], d["garment"], d["chunks"][:, :9], x_t], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((1, 11)), jnp.full((1, 3), t)], axis=1)
    v = model.apply({"params": params}, video, timesteps, d["context"], np.arange(14), layout)[:, -3:]
    want = flow.x0_from_flow(x_t, v, jnp.array([t]))
    np.testing.assert_allclose(np.asarray(x0), np.asarray(want), atol=1e-5 * float(jnp.abs(want).max()))
    v_all = model.apply({"params": params}, video, timesteps, d["context"], np.arange(14),
                        streaming_layout(4, 3, TPF))[:, -3:]
    assert float(jnp.abs(flow.x0_from_flow(x_t, v_all, jnp.array([t])) - x0).max()) > 1e-3


def test_load_edit_names_what_is_wrong():
    assert kv_edits.load_edit("fc_jax.kv_edits:selective_switch") is kv_edits.selective_switch
    for bad, match in (("selective_switch", "module:function"), ("no_such_module_x:f", "cannot import"),
                       ("fc_jax.kv_edits:nope", "has no function 'nope'")):
        with pytest.raises(ValueError, match=match):
            kv_edits.load_edit(bad)
