"""The generic optimizer step: gradients averaged over micro-batches, clip + AdamW (the optax chain), optional
EMA, and a guard that never keeps a non-finite update; optionally only the leaves of a trainable mask train.
Compiled with in/out shardings and the state donated."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fc_jax.training.peft import combine, select
from fc_jax.training.state import TrainState, update_ema

# loss_fn(params, micro_batch, key) -> scalar loss
LossFn = Callable[..., jax.Array]


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float = 0.0, ema_start: int = 0, mask=None):
    """`step(state, batch) -> (state, metrics)`. Every leaf of `batch` has a leading micro-batch axis
    [accum, micro_batch, ...]; the loss and the gradients are the means over it.

    `mask` (a bool tree over the parameters, `fc_jax.training.peft`; None: all train): only its True leaves are
    differentiated, updated (the optimizer state holds those alone) and averaged into the EMA; the others pass
    through bit for bit.

    Metrics: loss, grad_norm (before clipping, over the trained leaves), learning_rate (of this step), finite
    (bool). When the loss or the gradient norm is not finite the returned state is the input state (nothing
    poisoned is kept); the loop stops on `finite == False`.
    """

    def step(state: TrainState, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        accum = jax.tree.leaves(batch)[0].shape[0]
        trained = select(state.params, mask)
        grad_fn = jax.value_and_grad(lambda t, b, k: loss_fn(combine(t, state.params, mask), b, k))

        def micro(carry, xs):
            loss_sum, grad_sum = carry
            micro_batch, index = xs
            loss, grads = grad_fn(trained, micro_batch, jax.random.fold_in(key, index))
            grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
            return (loss_sum + loss, grad_sum), None

        if accum == 1:  # no accumulation loop to compile
            loss, grads = grad_fn(trained, jax.tree.map(lambda x: x[0], batch), jax.random.fold_in(key, 0))
        else:
            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trained)
            (loss_sum, grad_sum), _ = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros),
                                                   (batch, jnp.arange(accum)))
            loss = loss_sum / accum
            grads = jax.tree.map(lambda g, p: (g / accum).astype(p.dtype), grad_sum, trained)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, trained)
        params = combine(optax.apply_updates(trained, updates), state.params, mask)
        ema = state.ema_params
        if ema is not None:
            ema = update_ema(ema, params, state.step, ema_decay, ema_start, mask)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step), "finite": finite}
        return new, metrics

    return step
