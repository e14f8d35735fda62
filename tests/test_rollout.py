"""The self-forcing rollout: the same chunks as the streaming student, gradient only through the exit step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import kv_cache as kvc
from fc_jax import flow
from fc_jax.sampling.streaming import student_chunk
from fc_jax.sampling.student import denoise_chunk
from fc_jax.training.rollout import self_forcing_rollout

H, W = 4, 6


@pytest.fixture(scope="module")
def setup(tiny_dit):
    _, model, params = tiny_dit
    spec = kvc.CacheSpec(6, window_frames=14, sink_frames=5)
    ks = jax.random.split(jax.random.key(2), 3)
    ref, garment = (jax.random.normal(k, (1, 1, H, W, 48)) for k in ks[:2])
    context = jax.random.normal(ks[2], (1, 16, 32))
    cache = kvc.Ops(model).prefill(params, kvc.init_cache(model, spec, 1, H, W), ref, garment, context)
    t, s = flow.student_schedule([1000, 750, 500, 250], 5.0)
    return model, params, cache, jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)


def test_full_rollout_equals_the_streaming_student(setup):
    model, params, cache, t, s = setup
    key = jax.random.key(7)
    rollout = jax.jit(functools.partial(self_forcing_rollout, model, num_chunks=3, exit_step=3))
    latents, _ = rollout(params, cache, key, t, s)
    chunk = jax.jit(functools.partial(student_chunk, model))
    expected = []
    for c in range(3):
        x0, cache = chunk(params, cache, jax.random.fold_in(key, c), t, s)
        expected.append(x0)
    np.testing.assert_allclose(np.asarray(latents), np.asarray(jnp.concatenate(expected, axis=1)), atol=1e-5)


def test_gradient_flows_only_through_the_exit_step_forward(setup):
    model, params, cache, t, s = setup
    key = jax.random.key(3)

    def loss(p, exit_step, num_chunks):
        latents, _ = self_forcing_rollout(model, p, cache, key, t, s, num_chunks=num_chunks, exit_step=exit_step)
        return jnp.sum(latents[:, -3:] ** 2)  # the last chunk only

    # With exit at step 0 the last chunk is one forward on fresh noise through a gradient-free cache, so its
    # gradient equals that of a single denoise call on the rolled-out cache.
    one = jax.jit(functools.partial(self_forcing_rollout, model, num_chunks=1, exit_step=0))
    _, cache_after_one = one(params, cache, key, t, s)
    noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 1), 0), (1, 3, H, W, 48))
    single = jax.jit(jax.grad(lambda p: jnp.sum(kvc.denoise(model, p, cache_after_one, noise, t[0], s[0]) ** 2)))(params)
    rolled = jax.jit(jax.grad(loss), static_argnums=(1, 2))(params, 0, 2)
    assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(rolled)) > 0
    for a, b in zip(jax.tree.leaves(rolled), jax.tree.leaves(single)):
        a, b = np.asarray(a), np.asarray(b)  # float noise scales with the leaf; a leak through the cache would not
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6 * max(1.0, np.abs(b).max()))


def test_denoise_chunk_runs_a_prefix_of_the_schedule_with_fixed_keys(setup):
    """Steps [0, n): step 0 starts on fold_in(key, 0) noise, step i re-noises step i-1's x0 with fold_in(key, i)
    noise; the same numbers under jit and inside lax.scan with a traced chunk key."""
    model, params, cache, t, s = setup
    base = jax.random.key(11)
    key = jax.random.fold_in(base, 2)
    run = jax.jit(functools.partial(denoise_chunk, model), static_argnums=5)
    x1, x0_1 = run(params, cache, key, t, s, 1)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(jax.random.normal(jax.random.fold_in(key, 0), x1.shape)))
    x2, x0_2 = run(params, cache, key, t, s, 2)
    noise = jax.random.normal(jax.random.fold_in(key, 1), x1.shape)
    expected = flow.add_noise(x0_1, noise, jnp.full((1,), t[1]), jnp.full((1,), s[1]))
    np.testing.assert_allclose(np.asarray(x2), np.asarray(expected), atol=1e-6)
    np.testing.assert_allclose(np.asarray(x0_2), np.asarray(kvc.denoise(model, params, cache, x2, t[1], s[1])),
                               atol=1e-5)
    scan = jax.jit(lambda p: jax.lax.scan(
        lambda carry, c: (carry, denoise_chunk(model, p, cache, jax.random.fold_in(base, c), t, s, 2)),
        0, jnp.arange(3))[1])
    xs, x0s = scan(params)
    np.testing.assert_allclose(np.asarray(xs[2]), np.asarray(x2), atol=1e-6)
    np.testing.assert_allclose(np.asarray(x0s[2]), np.asarray(x0_2), atol=1e-5)
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 4\]"):
        denoise_chunk(model, params, cache, key, t, s, 0)


def test_exit_step_out_of_range_is_named(setup):
    model, params, cache, t, s = setup
    with pytest.raises(ValueError, match="exit_step must be in"):
        self_forcing_rollout(model, params, cache, jax.random.key(0), t, s, num_chunks=1, exit_step=4)


def _per_chunk_rollout(model, params, cache, key, t, s, num_chunks, exit_step):
    """The rollout as first written: each chunk's gradient forward on its own cache snapshot (the reference)."""
    frozen, cache = jax.lax.stop_gradient(params), jax.lax.stop_gradient(cache)
    shape = (1, 3, H, W, 48)
    outputs = []
    for c in range(num_chunks):
        chunk_key = jax.random.fold_in(key, c)
        x = jax.random.normal(jax.random.fold_in(chunk_key, 0), shape)
        for i in range(exit_step):
            x0 = kvc.denoise(model, frozen, cache, x, t[i], s[i])
            x = flow.add_noise(x0, jax.random.normal(jax.random.fold_in(chunk_key, i + 1), shape),
                               jnp.full((1,), t[i + 1]), jnp.full((1,), s[i + 1]))
        x0 = kvc.denoise(model, params, cache, x, t[exit_step], s[exit_step])
        outputs.append(x0)
        cache = kvc.commit(model, frozen, cache, jax.lax.stop_gradient(x0))
    return jnp.concatenate(outputs, axis=1), cache


def test_shared_cache_gradient_equals_per_chunk_snapshots(setup):
    """4 chunks fill the window (3 history chunks + the current): the last commit evicts into the ring, yet the
    two-pass rollout's latents, gradient and final cache equal the per-chunk-snapshot rollout's."""
    model, params, cache, t, s = setup
    key = jax.random.key(5)
    weights = jax.random.normal(jax.random.key(6), (1, 12, H, W, 48))

    def run(fn):
        def loss(p):
            latents, final = fn(p)
            return jnp.sum(weights * latents), (latents, final)
        return jax.jit(jax.grad(loss, has_aux=True))(params)

    g_new, (x_new, c_new) = run(lambda p: self_forcing_rollout(model, p, cache, key, t, s, num_chunks=4, exit_step=1))
    g_ref, (x_ref, c_ref) = run(lambda p: _per_chunk_rollout(model, p, cache, key, t, s, 4, 1))
    np.testing.assert_allclose(np.asarray(x_new), np.asarray(x_ref), atol=1e-5)
    no_grad, _ = jax.jit(lambda p: self_forcing_rollout(model, p, cache, key, t, s, num_chunks=4, exit_step=1,
                                                        gradient=False))(params)
    np.testing.assert_allclose(np.asarray(no_grad), np.asarray(x_ref), atol=1e-5)
    for a, b in zip(jax.tree.leaves((g_new, c_new)), jax.tree.leaves((g_ref, c_ref))):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6 * max(1.0, np.abs(b).max()))
    with pytest.raises(ValueError, match="would evict"):
        self_forcing_rollout(model, params, cache, key, t, s, num_chunks=5, exit_step=0)
