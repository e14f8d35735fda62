"""UniPC multistep flow solver (bh2, order 2, predict-x0), as diffusers' `UniPCMultistepScheduler(
prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=s)` and Wan's `FlowUniPCMultistepScheduler`.

Every UniPC update is linear in the current sample and the last few x0 predictions, with coefficients that depend
only on the σ schedule. `unipc_schedule` computes those coefficients once in float64 numpy; `unipc_step` is then
a pure, jit-friendly function of (step index, sample, flow prediction, state), usable inside `lax.scan`.

Step i (σ_0 > … > σ_n = 0, α = 1 − σ, λ = log α − log σ):
  m_i = x_i − σ_i·v_i                                    (x0 prediction at the model input x_i)
  corrector (i ≥ 1): x̃_i = a·x̃_{i−1} + c0·m_i + c1·m_{i−1} + c2·m_{i−2}
  predictor:         x_{i+1} = p·x̃_i + d0·m_i + d1·m_{i−1}
with orders min(2, n − i, i + 1) (warm-up and lower order at the final step).
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax.numpy as jnp
import numpy as np

from fc_jax.flow import shift_sigma


@dataclasses.dataclass(frozen=True)
class UniPCSchedule:
    """σ table, model timesteps and per-step update coefficients (all numpy)."""

    sigmas: np.ndarray  # [n + 1], float32, last = 0
    timesteps: np.ndarray  # [n], integer timesteps fed to the model (truncated, as upstream)
    corrector: np.ndarray  # [n, 4]: (a, c0, c1, c2); row 0 is (1, 0, 0, 0) = no correction
    predictor: np.ndarray  # [n, 3]: (p, d0, d1)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


@flax.struct.dataclass
class UniPCState:
    """What UniPC remembers between steps: the last corrected sample and the last two x0 predictions."""

    last_sample: jnp.ndarray
    m_prev: jnp.ndarray
    m_prev2: jnp.ndarray

    @classmethod
    def init(cls, sample):
        zeros = jnp.zeros_like(sample, dtype=jnp.float32)
        return cls(zeros, zeros, zeros)


SIGMA_GRIDS = ("diffusers", "wan")


def flow_sigmas(num_steps: int, shift: float, num_train_timesteps: int = 1000, grid: str = "diffusers") -> np.ndarray:
    """[num_steps + 1] shifted flow sigmas ending in 0.

    grid "diffusers" (the default): diffusers' `use_flow_sigmas`, linspace(1, 1/n_train, steps + 1)[:-1] shifted,
    the first nudged below 1 (log σ stays finite); the sampler starts at the noise level of its pure-noise input.
    grid "wan": Wan's `FlowUniPCMultistepScheduler` as the authors build it (`utils/fm_solvers_unipc.py`, made with
    shift 1 then `set_timesteps(n, shift=5)`): linspace(σ_max, 0, steps + 1)[:-1] shifted, σ_max = 1 − 1/n_train
    (0.999) rounded to float32, so sampling starts at σ = shift(0.999) < 1.
    """
    if grid == "diffusers":
        sigmas = shift_sigma(np.linspace(1.0, 1.0 / num_train_timesteps, num_steps + 1)[:-1], shift)
        if abs(sigmas[0] - 1.0) < 1e-6:
            sigmas[0] -= 1e-6  # keeps log σ finite in the first updates, as upstream
    elif grid == "wan":
        sigma_max = float(np.float32(1.0 - 1.0 / num_train_timesteps))
        sigmas = shift_sigma(np.linspace(sigma_max, 0.0, num_steps + 1)[:-1], shift)
    else:
        raise ValueError(f"unknown σ grid {grid!r}; expected one of {SIGMA_GRIDS}")
    return np.concatenate([sigmas, [0.0]]).astype(np.float32)


def _lambda(sigma: float) -> float:
    with np.errstate(divide="ignore"):
        return float(np.log(1.0 - sigma) - np.log(sigma))


def _orders(n: int) -> list[int]:
    return [min(2, n - i, i + 1) for i in range(n)]


def _phi(h: float):
    """(hh, h·φ1 = e^hh − 1, B_h) for the predict-x0 bh2 variant, hh = −h (h may be +inf at σ = 0)."""
    hh = -h
    h_phi_1 = math.expm1(hh) if math.isfinite(hh) else -1.0
    return hh, h_phi_1, h_phi_1


def _corrector_rhos(order: int, rks: list[float], hh: float, h_phi_1: float, b_h: float) -> np.ndarray:
    if order == 1:
        return np.array([0.5])
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1
    r_rows, b = [], []
    for j in range(1, order + 1):
        r_rows.append(np.power(np.asarray(rks + [1.0]), j - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.linalg.solve(np.stack(r_rows), np.asarray(b))


def unipc_schedule(num_steps: int, shift: float, num_train_timesteps: int = 1000,
                   grid: str = "diffusers") -> UniPCSchedule:
    """The σ table (`flow_sigmas` on `grid`), model timesteps and update coefficients of `num_steps` steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    sig = flow_sigmas(num_steps, shift, num_train_timesteps, grid)
    s = sig.astype(np.float64)
    alpha = 1.0 - s
    lam = [_lambda(x) for x in s]
    orders = _orders(num_steps)
    corrector = np.zeros((num_steps, 4))
    predictor = np.zeros((num_steps, 3))
    corrector[0] = (1.0, 0.0, 0.0, 0.0)
    for i in range(num_steps):
        # Predictor from σ_i to σ_{i+1}.
        h = lam[i + 1] - lam[i]
        _, h_phi_1, b_h = _phi(h)
        p, d0, d1 = s[i + 1] / s[i], -alpha[i + 1] * h_phi_1, 0.0
        if orders[i] == 2:
            rk = (lam[i - 1] - lam[i]) / h
            d0 += alpha[i + 1] * b_h * 0.5 / rk
            d1 -= alpha[i + 1] * b_h * 0.5 / rk
        predictor[i] = (p, d0, d1)
        # Corrector of the sample at σ_i, with the order the previous predictor used.
        if i == 0:
            continue
        order = orders[i - 1]
        h = lam[i] - lam[i - 1]
        hh, h_phi_1, b_h = _phi(h)
        rks = [(lam[i - 2] - lam[i - 1]) / h] if order == 2 else []
        rhos = _corrector_rhos(order, rks, hh, h_phi_1, b_h)
        a = s[i] / s[i - 1]
        c0 = -alpha[i] * b_h * rhos[-1]
        c1 = -alpha[i] * h_phi_1 + alpha[i] * b_h * rhos[-1]
        c2 = 0.0
        if order == 2:
            c1 += alpha[i] * b_h * rhos[0] / rks[0]
            c2 = -alpha[i] * b_h * rhos[0] / rks[0]
        corrector[i] = (a, c0, c1, c2)
    timesteps = (sig[:-1] * num_train_timesteps).astype(np.int64)
    return UniPCSchedule(sig, timesteps, corrector, predictor)


def unipc_step(schedule: UniPCSchedule, i, sample, flow, state: UniPCState):
    """One solver step at index i (int or traced). sample: x_i, flow: v predicted at (x_i, t_i).
    Returns (x_{i+1}, new state). fp32 math; the result has sample's dtype."""
    sigma = jnp.asarray(schedule.sigmas, jnp.float32)[i]
    corr = jnp.asarray(schedule.corrector, jnp.float32)[i]
    pred = jnp.asarray(schedule.predictor, jnp.float32)[i]
    x = sample.astype(jnp.float32)
    m = x - sigma * flow.astype(jnp.float32)
    is_first = jnp.asarray(i) == 0
    corrected = corr[0] * state.last_sample + corr[1] * m + corr[2] * state.m_prev + corr[3] * state.m_prev2
    x_c = jnp.where(is_first, x, corrected)
    x_next = pred[0] * x_c + pred[1] * m + pred[2] * state.m_prev
    return x_next.astype(sample.dtype), UniPCState(last_sample=x_c, m_prev=m, m_prev2=state.m_prev)
