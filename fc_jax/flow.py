"""Flow-matching schedule math (REFERENCE §4-5).

Conventions: `x_t = (1 − σ)·x0 + σ·ε`, `t = 1000·σ`, the model predicts the flow `v = ε − x0`, so
`x0 = x_t − σ·v`. The training table follows Self-Forcing's `FlowMatchScheduler(shift, sigma_min=0,
extra_one_step=True).set_timesteps(1000, training=True)` used by the authors: σ = linspace(1, 0, 1001)[:-1]
shifted, t = 1000·σ, and Gaussian-shaped per-timestep loss weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(sigma, shift: float):
    """σ' = s·σ / (1 + (s − 1)·σ). Works on numpy and jax arrays."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def training_timesteps(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The shifted training table, [num_train_timesteps] descending from 1000 (float64)."""
    sigmas = np.linspace(1.0, 0.0, num_train_timesteps + 1)[:-1]
    return shift_sigma(sigmas, shift) * num_train_timesteps


def training_weights(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Gaussian-shaped loss weight of each table entry: exp(−2((t − n/2)/n)²), min-shifted, summing to n."""
    t = training_timesteps(shift, num_train_timesteps)
    n = num_train_timesteps
    y = np.exp(-2.0 * ((t - n / 2) / n) ** 2)
    y = y - y.min()
    return y * (n / y.sum())


def warped_timesteps(steps, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Few-step denoising list warped through the shifted table: [1000, 750, 500, 250] -> ≈ [1000, 937.5,
    833.33, 625.0] at shift 5 (entry `table[1000 − step]`, with t = 0 for step 0)."""
    table = np.concatenate([training_timesteps(shift, num_train_timesteps), [0.0]])
    steps = np.asarray(steps, np.int64)
    if steps.min() < 0 or steps.max() > num_train_timesteps:
        raise ValueError(f"denoising steps must lie in [0, {num_train_timesteps}]; got {steps.tolist()}")
    return table[num_train_timesteps - steps]


def table_sigma(t, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
    """σ of the training-table entry nearest to each t: how the authors' scheduler turns a timestep into a noise
    level for add_noise and the x0 conversion (`utils/scheduler.py` `FlowMatchScheduler.add_noise`,
    `backbones/wan_wrapper.py` `_convert_flow_pred_to_x0`: argmin over the 1000 table timesteps). The table has no
    zero entry, so t = 0 gives its smallest σ (0.00498 at shift 5), not 0. numpy in: float64 numpy out; a jax
    array in: float32 jax out (usable under jit)."""
    table = training_timesteps(shift, num_train_timesteps)
    if isinstance(t, jax.Array):
        table = jnp.asarray(table, jnp.float32)
        return table[jnp.argmin(jnp.abs(table - t[..., None]), axis=-1)] / num_train_timesteps
    t = np.asarray(t, np.float64)
    nearest = np.abs(table[None, :] - t.reshape(-1, 1)).argmin(axis=1)
    return (table[nearest] / num_train_timesteps).reshape(t.shape)


def student_schedule(steps, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
    """The few-step student's (model timesteps, σ) per step, as the authors run it: the warped list truncated to
    integers for the model ([1000, 937, 833, 625] at shift 5; their `wan22_input_timestep` is a long), σ looked up
    from the unfloored warped timestep (their `timestep` stays float: int64 ones × a float step), i.e. the warped
    entry's own table σ ([1.0, 0.9375, 0.8333, 0.625])."""
    warped = warped_timesteps(steps, shift, num_train_timesteps)
    if warped.min() <= 0:
        raise ValueError(f"student denoising steps must be > 0 (the t = 0 pass is the commit); got {list(steps)}")
    return np.floor(warped), table_sigma(warped, shift, num_train_timesteps)


def sample_training_timesteps(key, shape, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
    """Uniform table index per element -> (timesteps [shape], loss weights [shape]), as the authors' stage 1."""
    idx = jax.random.randint(key, shape, 0, num_train_timesteps)
    t = jnp.asarray(training_timesteps(shift, num_train_timesteps), jnp.float32)[idx]
    w = jnp.asarray(training_weights(shift, num_train_timesteps), jnp.float32)[idx]
    return t, w


def _sigma(t, like):
    """σ = t / 1000 broadcast against `like` (t of shape [B] or [B, F] for latents [B, F, H, W, C])."""
    sigma = jnp.asarray(t, jnp.float32) / NUM_TRAIN_TIMESTEPS
    return sigma.reshape(sigma.shape + (1,) * (like.ndim - sigma.ndim))


def add_noise(x0, noise, t, sigma=None):
    """x_t = (1 − σ)·x0 + σ·ε with σ = t/1000 (or the given σ, e.g. `table_sigma(t)`); t [B] or [B, F]."""
    sigma = _sigma(t, x0) if sigma is None else _sigma(jnp.asarray(sigma) * NUM_TRAIN_TIMESTEPS, x0)
    return ((1.0 - sigma) * x0 + sigma * noise).astype(x0.dtype)


def flow_target(x0, noise):
    """The regression target v = ε − x0."""
    return noise - x0


def x0_from_flow(x_t, flow, t, sigma=None):
    """x0 = x_t − σ·v with σ = t/1000 (or the given σ, same shape as t)."""
    sigma = _sigma(t, x_t) if sigma is None else _sigma(jnp.asarray(sigma) * NUM_TRAIN_TIMESTEPS, x_t)
    return x_t - sigma * flow
