"""The train state: a plain pytree (step, params, optimizer state, RNG, EMA params where the stage uses them),
created directly in its sharded layout."""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fc_jax.training.sharding import Rules, replicated, tree_shardings


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar, the number of optimizer steps taken; rng: raw uint32 key data, the run's base key
    (step k draws from `fold_in(rng, k)`, so a resumed run draws exactly what an uninterrupted one would);
    ema_params: None when the stage keeps no EMA."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None


def init_inputs(model):
    cfg = model.cfg
    latents = jnp.zeros((1, 1, 2, 2, cfg.in_channels), jnp.float32)
    return latents, jnp.zeros((1,), jnp.float32), jnp.zeros((1, 1, cfg.text_dim), jnp.float32)


def fresh_state(params, tx: optax.GradientTransformation, seed: int, use_ema: bool) -> TrainState:
    """Step 0 around `params`: a new optimizer state, the seed's RNG, EMA starting at `params` if used."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
        ema_params=params if use_ema else None,
    )


def _boxed_state(model, tx: optax.GradientTransformation, seed: int, use_ema: bool) -> TrainState:
    """The state with flax's logical-partitioning boxes still on (trace this with `jax.eval_shape` only)."""
    return fresh_state(model.init(jax.random.key(seed), *init_inputs(model))["params"], tx, seed, use_ema)


def state_shardings(model, tx, mesh, rules: Rules, use_ema: bool) -> tuple[TrainState, TrainState]:
    """(abstract state: ShapeDtypeStructs carrying their shardings, the NamedSharding tree) for this mesh."""
    boxed = jax.eval_shape(lambda: _boxed_state(model, tx, 0, use_ema))
    shardings = tree_shardings(boxed, mesh, rules)
    shardings = shardings.replace(step=replicated(mesh), rng=replicated(mesh))
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings
    )
    return abstract, shardings


def init_state(model, tx, shardings: TrainState, seed: int, use_ema: bool, params=None) -> TrainState:
    """A fresh state laid out by `shardings` (compiled with those output shardings: a 5B model is never whole
    on one device). `params` (e.g. converted pretrained weights, already sharded) replace the random init."""

    def init(params):
        if params is None:
            params = nn.unbox(model.init(jax.random.key(seed), *init_inputs(model))["params"])
        return fresh_state(params, tx, seed, use_ema)

    if params is None:
        return jax.jit(lambda: init(None), out_shardings=shardings)()
    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)


def load_pretrained(path: str, config, abstract_params) -> Any:
    """Converted DiT weights (fc_jax orbax folder: restored shard by shard; official / diffusers: converted on
    the host), in the layout and dtypes of `abstract_params` (ShapeDtypeStructs with shardings)."""
    from fc_jax.convert.common import is_orbax_checkpoint, load_params
    from fc_jax.convert.dit import convert_checkpoint

    if os.path.isdir(path) and is_orbax_checkpoint(path):
        return load_params(path, abstract_params)
    host = convert_checkpoint(path, config)

    def place(target, value):
        value = np.asarray(value).astype(target.dtype)
        if value.shape != target.shape:
            raise ValueError(f"pretrained weight of shape {value.shape} where the model has {target.shape}")
        return jax.make_array_from_callback(target.shape, target.sharding, lambda index: value[index])

    return jax.tree.map(place, abstract_params, host)


def update_ema(ema, params, step, decay: float, start: int):
    """ema <- decay·ema + (1 − decay)·params from step `start` on; a copy of params before."""
    active = step >= start
    return jax.tree.map(
        lambda e, p: jnp.where(active, decay * e + (1.0 - decay) * p.astype(e.dtype), p.astype(e.dtype)),
        ema,
        params,
    )
