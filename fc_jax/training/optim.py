"""Optimizers and learning-rate schedules from the config (`config.optim`), as optax chains.

Gradient accumulation is not an optax wrapper here: the train step averages the gradients of
`grad_accum_steps` micro-batches inside one compiled call (a `lax.scan`), so one call is one optimizer step and
steps, learning rates, logs and checkpoints all count optimizer steps.
"""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "step", "cosine")


def learning_rate_schedule(optim) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then:
    - "constant": `lr`;
    - "step": `lr`, times `decay_factor` from step `decay_steps` on (the authors' stage-1 LambdaLR);
    - "cosine": cosine decay over `decay_steps` steps down to `decay_factor * lr`.
    """
    lr, warmup = float(optim.lr), int(optim.warmup_steps)
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"unknown config.optim.schedule {optim.schedule!r}; expected one of {SCHEDULES}")
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, warmup + int(optim.decay_steps), end_value=lr * float(optim.decay_factor)
        )
    warm = optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else optax.constant_schedule(lr)
    if optim.schedule == "constant":
        return optax.join_schedules([warm, optax.constant_schedule(lr)], [warmup])
    if int(optim.decay_steps) < warmup:
        raise ValueError(
            f"config.optim.decay_steps ({optim.decay_steps}) must not come before the end of the warmup ({warmup})"
        )
    after = optax.piecewise_constant_schedule(lr, {int(optim.decay_steps) - warmup: float(optim.decay_factor)})
    return optax.join_schedules([warm, after], [warmup])


def make_optimizer(optim) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(global-norm clip -> AdamW with the schedule), and the schedule (for logging the learning rate)."""
    schedule = learning_rate_schedule(optim)
    parts = []
    if optim.clip_norm and optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(optim.clip_norm)))
    parts.append(
        optax.adamw(
            schedule,
            b1=float(optim.b1),
            b2=float(optim.b2),
            eps=float(optim.eps),
            weight_decay=float(optim.weight_decay),
        )
    )
    return optax.chain(*parts), schedule
