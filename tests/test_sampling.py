"""Flow-matching schedule math and the UniPC solver against diffusers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import flow
from fc_jax.sampling.unipc import UniPCState, unipc_schedule, unipc_step


def test_warped_student_timesteps_match_the_reference_values():
    t = flow.warped_timesteps([1000, 750, 500, 250], shift=5.0)
    np.testing.assert_allclose(t, [1000.0, 937.5, 2500.0 / 3.0, 625.0], rtol=1e-12)


def test_shift_is_the_published_formula():
    sigma = np.linspace(0, 1, 11)
    np.testing.assert_allclose(flow.shift_sigma(sigma, 5.0), 5 * sigma / (1 + 4 * sigma))


def test_training_weights_are_gaussian_shaped_and_normalised():
    t = flow.training_timesteps(5.0)
    w = flow.training_weights(5.0)
    assert t[0] == 1000.0 and np.all(np.diff(t) < 0) and t[-1] > 0
    assert w.sum() == pytest.approx(1000.0) and w.min() == 0.0
    assert abs(t[np.argmax(w)] - 500.0) < 5.0  # peak at mid-range timesteps


def test_add_noise_and_flow_conversions_invert_each_other():
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k1, (2, 3, 4, 4, 8))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([[250.0, 500.0, 900.0], [10.0, 20.0, 30.0]])
    xt = flow.add_noise(x0, eps, t)
    v = flow.flow_target(x0, eps)
    np.testing.assert_allclose(flow.x0_from_flow(xt, v, t), x0, atol=1e-5)
    np.testing.assert_allclose(xt[0, 1], 0.5 * x0[0, 1] + 0.5 * eps[0, 1], atol=1e-6)


def test_sampled_training_timesteps_come_from_the_table_with_their_weights():
    t, w = flow.sample_training_timesteps(jax.random.key(1), (64,), 5.0)
    table, weights = flow.training_timesteps(5.0), flow.training_weights(5.0)
    idx = [int(np.argmin(np.abs(table - x))) for x in np.asarray(t)]
    np.testing.assert_allclose(np.asarray(w), weights[idx], rtol=1e-5)


def _model(x, t):
    """A deterministic, nonlinear stand-in for a flow network."""
    return np.tanh(x) * 0.7 + (t / 1000.0) * x * 0.3 - 0.1


@pytest.mark.parametrize("num_steps", [1, 2, 3, 10])
def test_unipc_matches_diffusers_step_for_step(num_steps):
    torch = pytest.importorskip("torch")
    from diffusers import UniPCMultistepScheduler

    ref = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
    )
    ref.set_timesteps(num_steps)
    schedule = unipc_schedule(num_steps, shift=5.0)
    np.testing.assert_array_equal(schedule.timesteps, ref.timesteps.numpy())

    x0 = np.random.default_rng(0).standard_normal((1, 2, 4, 4, 3)).astype(np.float32)
    x_ref = torch.from_numpy(x0.copy())
    x = jnp.asarray(x0)
    state = UniPCState.init(x)
    step = jax.jit(lambda i, x, v, s: unipc_step(schedule, i, x, v, s))
    for i, t in enumerate(ref.timesteps):
        v_ref = torch.from_numpy(_model(x_ref.numpy(), float(t)))
        x_ref = ref.step(v_ref, t, x_ref).prev_sample
        x, state = step(i, x, jnp.asarray(_model(np.asarray(x), float(schedule.timesteps[i]))), state)
        np.testing.assert_allclose(np.asarray(x), x_ref.numpy(), atol=1e-5, rtol=1e-5, err_msg=f"step {i}")


def test_student_schedule_truncates_timesteps_and_uses_table_sigmas_like_the_authors():
    t, sigma = flow.student_schedule([1000, 750, 500, 250], shift=5.0)
    np.testing.assert_array_equal(t, [1000.0, 937.0, 833.0, 625.0])
    table = flow.training_timesteps(5.0)
    for ti, si in zip(t, sigma):
        assert si * 1000 in table and 0 <= si * 1000 - ti < 1  # the unfloored warped entry's own σ
    np.testing.assert_allclose(sigma, [1.0, 0.9375, 0.8333333333, 0.625])
