"""What a training stage is to the driver, and the single-network stages' shared part.

A stage is one file under `fc_jax/training/stages/` named as `config.stage` ("sft", "teacher_forcing",
"gr_dmd", ...) whose module attribute `STAGE` is a `Stage`. It says everything that differs between stages:
- `build_model(config)`: its network (a `WanDiT` unless overridden);
- `batch_axes`: the logical axes of each array of one step's global batch;
- `state_layout(setup)`: the abstract state (ShapeDtypeStructs with shardings) and its NamedSharding tree;
- `initial_state(setup)`: the step-0 state (pretrained weights loaded), laid out as `state_layout` says;
- `open_data(setup, workdir)`: the training batches per process and fixed evaluation batches (`StageData`);
- `device_batch(setup, local)`: one process's rows of a step -> the global batch the step takes;
  `eval_batch(setup, local)`, the same for a fixed evaluation batch (by default `device_batch`);
- `compile(setup)`: the step program `run(state, batch) -> (state, host metrics incl. "finite")`;
- `eval_hooks(setup, data)`: its evaluation hooks, `hook(step, state) -> {name: value}`;
- `tokens_per_sample(config)`, for the logged throughput; `exports`: the state's parameter trees, the default
  export first (`python -m fc_jax.export`); `describe(setup)`: a line logged at the start (parameter counts).
Everything else (resume, the NaN guard, logging, saves, signals) is the driver's (`fc_jax.training.driver`).

`SingleNetworkStage` is the form of stages 1 and 2 (and of the VAE stage, which overrides its network, state
layout and data): one network trained on a loss `loss(model, config, params, micro_batch, key)`, gradients
accumulated over `config.optim.grad_accum_steps` micro-batches, optional EMA; by default a `WanDiT` on the latent
triplets of `fc_jax.data.sources`. `config.train.trainable` ("all" | "attention" | "lora", `fc_jax.training.peft`)
says which of the DiT's parameters train: the state holds its parameter tree (LoRA: `{"base", "lora"}`) and an
optimizer state for the trainable leaves only, and the loss sees the merged plain DiT parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import numpy as np

from fc_jax.models import dit
from fc_jax.training.optim import make_optimizer
from fc_jax.training.peft import Trainable
from fc_jax.training.sharding import activation_sharding, global_batch, replicated
from fc_jax.training.state import init_state, load_pretrained, state_shardings
from fc_jax.training.step import make_train_step

EVAL_KEY = 0x5EED  # evaluation draws t and noise from this fixed key: the same numbers at every evaluation

Hook = Callable[[int, Any], dict]


@dataclasses.dataclass
class StageData:
    """train: an endless iterator of per-process batches (dicts of numpy rows, with "id"), checkpointable by
    grain; skipped: the bad-record filter (`.skipped`: record names) or None; eval_batches: fixed batches."""

    train: Iterator[dict]
    skipped: Any = None
    eval_batches: list = dataclasses.field(default_factory=list)


class Stage:
    """Base of every stage (see the module docstring). Subclasses set `name`, `batch_axes`, `exports` and
    implement the methods that raise here."""

    name: str = ""
    batch_axes: dict = {}
    exports: tuple[str, ...] = ("params",)

    def build_model(self, config):
        return dit.build_model(config)

    def tokens_per_sample(self, config) -> int:
        raise NotImplementedError

    def state_layout(self, setup):
        raise NotImplementedError

    def initial_state(self, setup):
        raise NotImplementedError

    def open_data(self, setup, workdir: str) -> StageData:
        raise NotImplementedError

    def device_batch(self, setup, local: dict) -> dict:
        raise NotImplementedError

    def eval_batch(self, setup, local: dict) -> dict:
        """An evaluation batch for the devices: as a training one unless a stage augments its training batches."""
        return self.device_batch(setup, local)

    def compile(self, setup) -> Callable:
        raise NotImplementedError

    def abstract_batch(self, setup) -> dict:
        """ShapeDtypeStructs (with shardings) of one step's global batch, for ahead-of-time compiles."""
        raise NotImplementedError

    def eval_hooks(self, setup, data: StageData) -> list[Hook]:
        return []

    def describe(self, setup) -> str:
        """A line for the start of the run ("" = none)."""
        return ""


def video_tokens(config) -> int:
    """Video tokens of one sample: video latent frames x latent tokens per frame."""
    _, ph, pw = config.model.patch_size
    frames = (config.video.num_frames - 1) // 4 + 1
    return frames * (config.video.height // 16 // ph) * (config.video.width // 16 // pw)


def in_context_tokens(config) -> int:
    """In-context sequence length of one sample: (2 condition + video latent frames) x latent tokens per frame."""
    _, ph, pw = config.model.patch_size
    frames = (config.video.num_frames - 1) // 4 + 1
    return (dit.NUM_CONDITION_FRAMES + frames) * (config.video.height // 16 // ph) * (config.video.width // 16 // pw)


class SingleNetworkStage(Stage):
    """One network trained on `loss`: state `TrainState`, batches [accum, micro, ...], the loss on fixed batches
    as evaluation (`eval/loss`); by default (stages 1 and 2) a `WanDiT` on latent triplets."""

    # Logical axes of each array of a batch; the leading None is the micro-batch (accumulation) axis.
    batch_axes = {
        "video": (None, "batch", "frames", None, None, "channels"),
        "reference": (None, "batch", "frames", None, None, "channels"),
        "garment": (None, "batch", "frames", None, None, "channels"),
        "context": (None, "batch", None, None),
    }
    exports = ("ema_params", "params")

    def loss(self, model, config, params, batch, key) -> jax.Array:
        """The scalar loss of one micro-batch {video [B, F, h, w, C], reference, garment [B, 1, h, w, C],
        context [B, L, D]}."""
        raise NotImplementedError

    def _loss_fn(self, setup):
        """`loss_fn(params, micro_batch, key)` on the state's parameter tree (LoRA merged before the forward)."""
        merge = self._trainable(setup).merge
        return lambda params, batch, key: self.loss(setup.model, setup.config, merge(params), batch, key)

    def _use_ema(self, config) -> bool:
        return float(config.train.ema_decay) > 0

    def _trainable(self, setup) -> Trainable:
        """`config.train.trainable` (`fc_jax.training.peft`); anything but "all" only for a `WanDiT`."""
        trainable = Trainable.from_config(setup.config)
        if trainable.mode != "all" and not isinstance(setup.model, dit.WanDiT):
            raise ValueError(f"config.train.trainable {trainable.mode!r} is for the DiT stages; stage {self.name!r} "
                             f"trains a {type(setup.model).__name__}: use 'all'")
        return trainable

    def describe(self, setup) -> str:
        """The trainable and total parameter counts; a warning where a partial mode starts from random weights."""
        trainable = self._trainable(setup)
        line = trainable.describe(setup.abstract.params)
        if trainable.mode != "all" and not setup.config.train.init_from:
            line += ("; WARNING: no train.init_from, and the random model's output head is zero and frozen, so "
                     "nothing gets a gradient")
        return line

    def state_layout(self, setup):
        tx, _ = make_optimizer(setup.config.optim)
        return state_shardings(setup.model, tx, setup.mesh, setup.rules, self._use_ema(setup.config),
                               self._trainable(setup))

    def initial_state(self, setup):
        config = setup.config
        tx, _ = make_optimizer(config.optim)
        trainable = self._trainable(setup)
        params = None
        if config.train.init_from:
            params = load_pretrained(config.train.init_from, config, trainable.base(setup.abstract.params))
        return init_state(setup.model, tx, setup.shardings, config.train.seed, self._use_ema(config), params,
                          trainable)

    def open_data(self, setup, workdir: str) -> StageData:
        from fc_jax.data import sources

        builder = sources.open_latent_data(setup.config, workdir)
        train, skipped, eval_batches = sources.latent_batches(
            setup.config, builder, setup.host_rows, jax.process_index(), jax.process_count())
        return StageData(iter(train), skipped, eval_batches)

    def device_batch(self, setup, local: dict) -> dict:
        """Per-process rows [accum * m, ...] -> global arrays [accum, micro, ...] (micro-batch axis sharded)."""
        shaped = {k: v.reshape((setup.accum, v.shape[0] // setup.accum) + v.shape[1:])
                  for k, v in local.items() if k in self.batch_axes}
        return global_batch(shaped, setup.batch_shardings)

    def abstract_batch(self, setup) -> dict:
        config = setup.config
        frames = (config.video.num_frames - 1) // 4 + 1
        h, w, c = config.video.height // 16, config.video.width // 16, config.model.in_channels
        a, m = setup.accum, setup.micro
        shapes = {
            "video": (a, m, frames, h, w, c),
            "reference": (a, m, 1, h, w, c),
            "garment": (a, m, 1, h, w, c),
            "context": (a, m, config.model.text_len, config.model.text_dim),
        }
        return {k: jax.ShapeDtypeStruct(s, np.float32, sharding=setup.batch_shardings[k]) for k, s in shapes.items()
                if k in self.batch_axes}

    def train_step(self, setup):
        """The uncompiled `step(state, batch) -> (state, metrics)` (`fc_jax.training.step.make_train_step`)."""
        config = setup.config
        tx, schedule = make_optimizer(config.optim)
        mask = self._trainable(setup).mask(setup.abstract.params)
        return make_train_step(self._loss_fn(setup), tx, schedule, float(config.train.ema_decay),
                               int(config.train.ema_start), mask)

    def compile(self, setup) -> Callable:
        """The step compiled ahead of time for the mesh (state in/out with its shardings, donated); returns
        host metrics {loss, grad_norm, learning_rate, finite}."""
        jitted = jax.jit(self.train_step(setup), in_shardings=(setup.shardings, setup.batch_shardings),
                         out_shardings=(setup.shardings, replicated(setup.mesh)), donate_argnums=(0,))
        with activation_sharding(setup.mesh, setup.rules):
            compiled = jitted.lower(setup.abstract, self.abstract_batch(setup)).compile()

        def run(state, batch):
            state, metrics = compiled(state, batch)
            return state, jax.device_get(metrics)

        return run

    def eval_hooks(self, setup, data: StageData) -> list[Hook]:
        """`eval/loss`: the loss on the fixed evaluation batches with a fixed key (comparable across steps)."""
        if not data.eval_batches:
            return []
        loss_fn, key = self._loss_fn(setup), jax.random.key(EVAL_KEY)

        def eval_loss(params, batch):
            return jax.lax.map(lambda micro: loss_fn(params, micro, key), batch).mean()

        jitted = jax.jit(eval_loss, in_shardings=(setup.shardings.params, setup.batch_shardings),
                         out_shardings=replicated(setup.mesh))
        batches = [self.eval_batch(setup, b) for b in data.eval_batches]

        def evaluate(step, state):
            with activation_sharding(setup.mesh, setup.rules):
                values = [float(jax.device_get(jitted(state.params, b))) for b in batches]
            return {"eval/loss": float(np.mean(values))}

        return [evaluate]
