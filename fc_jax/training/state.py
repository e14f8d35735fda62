"""The train state: a plain pytree (step, params, optimizer state, RNG, EMA params where the stage uses them),
created directly in its sharded layout."""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fc_jax.models import dit
from fc_jax.training.peft import LORA_KEY, Trainable, combine, select
from fc_jax.training.sharding import Rules, replicated, tree_shardings

ALL = Trainable()  # every parameter trains


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
    latents = jnp.zeros((1, 1, 2, 2, cfg.patch_channels), jnp.float32)
    return latents, jnp.zeros((1,), jnp.float32), jnp.zeros((1, 1, cfg.text_dim), jnp.float32)


def fresh_state(params, tx: optax.GradientTransformation, seed: int, use_ema: bool, mask=None) -> TrainState:
    """Step 0 around `params`: a new optimizer state (for the leaves `mask` trains, `fc_jax.training.peft`; None:
    all), the seed's RNG, EMA starting at `params` if used."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(select(params, mask)),
        rng=jax.random.key_data(jax.random.key(seed)),
        ema_params=params if use_ema else None,
    )


def _trainable_params(trainable: Trainable, params, seed: int):
    """The trainable tree around the DiT's `params` (`Trainable.wrap`; LoRA factors from the seed's LoRA key)."""
    return trainable.wrap(params, jax.random.fold_in(jax.random.key(seed), LORA_KEY))


def _boxed_state(model, tx: optax.GradientTransformation, seed: int, use_ema: bool,
                 trainable: Trainable = ALL) -> TrainState:
    """The state with flax's logical-partitioning boxes still on (trace this with `jax.eval_shape` only)."""
    params = _trainable_params(trainable, model.init(jax.random.key(seed), *init_inputs(model))["params"], seed)
    return fresh_state(params, tx, seed, use_ema, trainable.mask(params))


def state_shardings(model, tx, mesh, rules: Rules, use_ema: bool,
                    trainable: Trainable = ALL) -> tuple[TrainState, TrainState]:
    """(abstract state: ShapeDtypeStructs carrying their shardings, the NamedSharding tree) for this mesh, with
    the parameters and optimizer state `trainable` (`fc_jax.training.peft`) lays out."""
    boxed = jax.eval_shape(lambda: _boxed_state(model, tx, 0, use_ema, trainable))
    shardings = tree_shardings(boxed, mesh, rules)
    shardings = shardings.replace(step=replicated(mesh), rng=replicated(mesh))
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings
    )
    return abstract, shardings


def init_state(model, tx, shardings: TrainState, seed: int, use_ema: bool, params=None,
               trainable: Trainable = ALL) -> TrainState:
    """A fresh state laid out by `shardings` (compiled with those output shardings: a 5B model is never whole
    on one device). `params` (the DiT's, e.g. converted pretrained weights, already sharded) replace the random
    init; `trainable` wraps them (LoRA adds its factors) and masks the optimizer state."""

    def init(params):
        if params is None:
            params = nn.unbox(model.init(jax.random.key(seed), *init_inputs(model))["params"])
        params = _trainable_params(trainable, params, seed)
        return fresh_state(params, tx, seed, use_ema, trainable.mask(params))

    if params is None:
        return jax.jit(lambda: init(None), out_shardings=shardings)()
    return jax.jit(init, in_shardings=(trainable.base(shardings.params),), out_shardings=shardings)(params)


def load_pretrained(path: str, config, abstract_params) -> Any:
    """Converted DiT weights (fc_jax orbax folder: restored shard by shard; official / diffusers: converted on
    the host), in the layout and dtypes of `abstract_params` (ShapeDtypeStructs with shardings). A channel-concat
    model (`config.model.condition`) also takes a base checkpoint: its patch embedding is widened with zeros for
    the condition channels (`dit.widen_patch_embedding`), so it starts as the base model on the video."""
    from fc_jax.convert.common import is_orbax_checkpoint, load_params, saved_shapes
    from fc_jax.convert.dit import convert_checkpoint

    wanted = abstract_params["patch_embedding"]["kernel"]
    if os.path.isdir(path) and is_orbax_checkpoint(path):
        saved = saved_shapes(path).get("patch_embedding/kernel", wanted.shape)
        params = load_params(path, _with_patch_channels(abstract_params, saved[-2]))
    else:
        host = convert_checkpoint(path, _base_model_config(config))

        def place(target, value):
            value = np.asarray(value).astype(target.dtype)
            if value.shape != target.shape:
                raise ValueError(f"pretrained weight of shape {value.shape} where the model has {target.shape}")
            return jax.make_array_from_callback(target.shape, target.sharding, lambda index: value[index])

        target = _with_patch_channels(abstract_params, host["patch_embedding"]["kernel"].shape[-2])
        params = jax.tree.map(place, target, host)
    if params["patch_embedding"]["kernel"].shape == wanted.shape:
        return params
    patch = {"patch_embedding": params["patch_embedding"]}
    shardings = {"patch_embedding": jax.tree.map(lambda a: a.sharding, abstract_params["patch_embedding"])}
    widen = functools.partial(dit.widen_patch_embedding, channels=wanted.shape[-2])
    return dict(params, **jax.jit(widen, out_shardings=shardings)(patch))


def _with_patch_channels(abstract_params, channels: int):
    """`abstract_params` with the patch-embedding kernel taking `channels` input channels (as saved)."""
    kernel = abstract_params["patch_embedding"]["kernel"]
    shape = kernel.shape[:-2] + (channels, kernel.shape[-1])
    patch = dict(abstract_params["patch_embedding"], kernel=jax.ShapeDtypeStruct(shape, kernel.dtype,
                                                                               sharding=kernel.sharding))
    return dict(abstract_params, patch_embedding=patch)


def _base_model_config(config):
    """`config` with an in-context model (what official and diffusers checkpoints hold)."""
    if config.model.get("condition", "in_context") == "in_context":
        return config
    base = config.copy_and_resolve_references()
    base.model.condition = "in_context"
    return base


def update_ema(ema, params, step, decay: float, start: int, mask=None):
    """ema <- decay·ema + (1 − decay)·params from step `start` on; a copy of params before. Leaves `mask` freezes
    (`fc_jax.training.peft`) are kept as they are (equal to the frozen parameters, bit for bit)."""
    active = step >= start
    new = jax.tree.map(
        lambda e, p: jnp.where(active, decay * e + (1.0 - decay) * p.astype(e.dtype), p.astype(e.dtype)),
        select(ema, mask),
        select(params, mask),
    )
    return combine(new, ema, mask)
