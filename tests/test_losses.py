"""DMD and gradient-reweighted DMD losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.losses import dmd_gradient, dmd_loss, gr_dmd_loss, reward_weights


def _arrays(b=2, f=6, h=4, w=4, c=3, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    gen, real, fake = (jax.random.normal(k, (b, f, h, w, c)) for k in ks[:3])
    rewards = jax.random.uniform(ks[3], (b, 4 * (f - 1) + 1))
    return gen, real, fake, rewards


def test_gradient_is_the_weighted_dmd_gradient_frame_by_frame():
    gen, real, fake, rewards = _arrays()
    g = jax.grad(lambda x: gr_dmd_loss(x, real, fake, rewards).sum())(gen)
    w = reward_weights(rewards, 6)
    expected = w[:, :, None, None, None] * dmd_gradient(gen, real, fake) / (4 * 4 * 3)
    np.testing.assert_allclose(np.asarray(g), np.asarray(expected), atol=1e-6)
    # ...and by hand: (fake - real) / mean|gen - real| per example.
    norm = np.abs(np.asarray(gen - real)).mean(axis=(1, 2, 3, 4), keepdims=True)
    np.testing.assert_allclose(np.asarray(dmd_gradient(gen, real, fake)), np.asarray(fake - real) / norm, rtol=1e-5)


def test_uniform_rewards_give_plain_dmd():
    gen, real, fake, _ = _arrays()
    uniform = jnp.full((2, 21), 0.37)
    np.testing.assert_allclose(np.asarray(gr_dmd_loss(gen, real, fake, uniform)),
                               np.asarray(dmd_loss(gen, real, fake)), rtol=1e-6)
    g1 = jax.grad(lambda x: gr_dmd_loss(x, real, fake, uniform).sum())(gen)
    g2 = jax.grad(lambda x: dmd_loss(x, real, fake).sum())(gen)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=1e-9)


def test_weights_sum_to_one_and_favour_low_rewards():
    rewards = jnp.concatenate([jnp.full((1, 9), 0.9), jnp.full((1, 12), 0.1)], axis=1)  # chunk 0 good, chunk 1 bad
    w = np.asarray(reward_weights(rewards, 6))
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(w[0, 3:] > w[0, :3])
    np.testing.assert_allclose(w[0, :3], w[0, 0])  # constant within a chunk


def test_reward_aggregation_on_a_hand_computed_example():
    frames = jnp.arange(81, dtype=jnp.float32)[None]  # reward of frame i = i
    # latent 0 = 0; latent k = mean(4k-3 .. 4k) = 4k - 1.5; chunk 0 = (0 + 2.5 + 6.5) / 3 = 3; chunk c = 12c + 6.5
    chunk = np.array([3.0] + [12 * c + 6.5 for c in range(1, 7)])
    logits = np.repeat(-chunk / 0.2, 3)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(np.asarray(reward_weights(frames, 21))[0], expected, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="decode to 81 frames; got 80"):
        reward_weights(frames[:, :80], 21)


def test_losses_work_under_jit_and_vmap_and_survive_a_zero_normaliser():
    gen, real, fake, rewards = _arrays()
    eager = gr_dmd_loss(gen, real, fake, rewards)
    np.testing.assert_allclose(np.asarray(jax.jit(gr_dmd_loss)(gen, real, fake, rewards)), np.asarray(eager), rtol=1e-6)
    stacked = jax.vmap(gr_dmd_loss)(*(jnp.stack([a, a]) for a in (gen, real, fake, rewards)))
    np.testing.assert_allclose(np.asarray(stacked[1]), np.asarray(eager), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(dmd_gradient(real, real, fake))))  # |gen - real| = 0: nan_to_num
    assert not np.any(np.isnan(np.asarray(jax.grad(lambda x: dmd_loss(x, x, fake).sum())(real))))
