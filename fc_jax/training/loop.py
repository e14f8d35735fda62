"""The training loop: mesh, sharded state, compiled step, data, checkpoints, logging, evaluation, preemption.

It runs the single-model stages: `config.stage` names a module of `STAGES` that provides `loss_fn(model, config,
params, batch, key)`, `tokens_per_sample(config)` and `BATCH_AXES` (the logical axes of its batch arrays); the
data are stage 1's latent triplets (`fc_jax.training.sft.make_data`).

Guarantees:
- Exact resume. Step k+1 draws its randomness from `fold_in(seed key, k)` and its batch from the grain
  iterator restored with the state, so a job killed after step k and restarted reproduces an uninterrupted run's
  losses from step k+1 on, bit for bit (same devices and mesh).
- Preemption. SIGTERM (on any process) makes the loop save a checkpoint at the step reached, wait for it to be
  written, and return normally.
- No poisoned checkpoints. A non-finite loss or gradient norm stops the job (`NonFiniteError`, naming the step
  and the batch's records) before anything of that step is saved; the step itself keeps the previous state.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from types import ModuleType
from typing import Callable, Sequence

import jax
import numpy as np

from fc_jax.models import dit
from fc_jax import distributed
from fc_jax.training import sft
from fc_jax.training.checkpoint import Checkpointer
from fc_jax.training.logger import MetricLogger
from fc_jax.training.optim import make_optimizer
from fc_jax.training.sharding import (
    activation_sharding,
    batch_axis_size,
    global_batch,
    logical_rules,
    logical_sharding,
    make_mesh,
    replicated,
)
from fc_jax.training.state import TrainState, init_state, load_pretrained, state_shardings
from fc_jax.training.step import make_train_step

STAGES = {"sft": "fc_jax.training.sft", "teacher_forcing": "fc_jax.training.teacher_forcing"}
EVAL_KEY = 0x5EED  # evaluation draws t and noise from this fixed key: the same numbers at every evaluation


Hook = Callable[[int, TrainState], dict]


class NonFiniteError(RuntimeError):
    """The loss or the gradients of a step were NaN or Inf."""


class Preemption:
    """Remembers a SIGTERM instead of dying on it."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def stage_module(config) -> ModuleType:
    """The module of `config.stage` (default "sft")."""
    name = config.get("stage", "sft")
    if name not in STAGES:
        raise ValueError(f"config.stage {name!r}: fc_jax.training.loop runs the stages {sorted(STAGES)}")
    module = importlib.import_module(STAGES[name])
    missing = [a for a in ("loss_fn", "tokens_per_sample", "BATCH_AXES") if not hasattr(module, a)]
    if missing:
        raise TypeError(f"stage module {module.__name__} lacks {missing}")
    return module


def batch_layout(config, mesh, rules) -> tuple[int, int, int]:
    """(accumulation steps, global micro-batch, per-process rows per optimizer step), checked against the mesh."""
    g, accum = int(config.train.global_batch), int(config.optim.grad_accum_steps)
    if accum < 1 or g % accum:
        raise ValueError(f"config.train.global_batch {g} is not divisible by config.optim.grad_accum_steps {accum}")
    micro = g // accum
    ways = batch_axis_size(mesh, rules)
    if micro % ways:
        raise ValueError(
            f"the micro-batch of {micro} samples (global_batch {g} / grad_accum_steps {accum}) does not split over "
            f"the {ways} batch shards of the mesh {dict(mesh.shape)}"
        )
    if g % jax.process_count():
        raise ValueError(f"config.train.global_batch {g} does not split over {jax.process_count()} processes")
    return accum, micro, g // jax.process_count()


def _to_device(local: dict, accum: int, shardings: dict) -> dict:
    """Per-process rows [accum * m, ...] -> global arrays [accum, micro, ...] (micro-batch axis sharded)."""
    shaped = {k: v.reshape((accum, v.shape[0] // accum) + v.shape[1:]) for k, v in local.items()}
    return global_batch(shaped, shardings)


def train(config, workdir: str, hooks: Sequence[Hook] = ()) -> dict:
    """Run stage `config.stage` (one of `STAGES`) in `workdir`, resuming from its latest checkpoint.

    Every `config.train.eval_every` steps (and at step 0 of a fresh run, and at the end) the evaluation hooks run:
    the stage's own (loss on fixed batches, `eval/loss`) and `hooks`, each `hook(step, state) -> {name: value}`
    (on every process; the main process logs what they return). Returns a summary {step, preempted,
    skipped_records, last_loss}."""
    stage = stage_module(config)
    distributed.initialize(config.distributed.initialize)
    mesh = make_mesh(config.mesh)
    rules = logical_rules(config)
    model = dit.build_model(config)
    tx, schedule = make_optimizer(config.optim)
    use_ema = float(config.train.ema_decay) > 0
    abstract, shardings = state_shardings(model, tx, mesh, rules, use_ema)
    accum, micro, host_rows = batch_layout(config, mesh, rules)
    main = distributed.is_main_process()
    if main:
        print(f"mesh {dict(mesh.shape)} over {jax.device_count()} devices ({jax.process_count()} processes); "
              f"global batch {config.train.global_batch} = {accum} x {micro}", flush=True)

    builder = sft.open_latent_data(config, workdir)
    train_data, skipped, eval_batches = sft.make_data(
        config, builder, host_rows, jax.process_index(), jax.process_count()
    )
    data_iter = iter(train_data)

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep_last=config.checkpoint.keep_last,
                        keep_every=config.checkpoint.keep_every, async_save=config.checkpoint.async_save)
    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, abstract, data_iter)
        if main:
            print(f"resumed from {ckpt.directory}/{latest}", flush=True)
    else:
        params = None
        if config.train.init_from:
            params = load_pretrained(config.train.init_from, config, abstract.params)
        state = init_state(model, tx, shardings, config.train.seed, use_ema, params)
    start = int(jax.device_get(state.step))

    batch_shardings = {k: logical_sharding(v, mesh, rules) for k, v in stage.BATCH_AXES.items()}
    loss_fn = lambda params, batch, key: stage.loss_fn(model, config, params, batch, key)
    step_fn = make_train_step(loss_fn, tx, schedule, float(config.train.ema_decay), int(config.train.ema_start))
    compiled = compile_step(step_fn, abstract, shardings, batch_shardings, config, mesh, rules)
    evaluate = _make_eval(loss_fn, mesh, rules, shardings, batch_shardings, eval_batches, accum)
    hooks = ([evaluate] if evaluate is not None else []) + list(hooks)
    eval_every = int(config.train.eval_every)

    def run_hooks(step: int, state) -> None:
        values = {}
        for hook in hooks:
            values.update(hook(step, state))
        if values:
            logger.scalars(step, values)

    total = int(config.train.steps)
    tokens_per_step = int(config.train.global_batch) * stage.tokens_per_sample(config)
    logger = MetricLogger(workdir, total, start, enabled=main)
    preemption = Preemption()
    step = saved = start
    preempted = False
    last_loss = float("nan")
    try:
        if eval_every > 0 and start == 0:
            run_hooks(0, state)
        while step < total:
            began = time.perf_counter()
            local = next(data_iter)
            ids = local.pop("id")
            batch = _to_device(local, accum, batch_shardings)
            state, metrics = compiled(state, batch)
            metrics = jax.device_get(metrics)
            if not metrics["finite"]:
                raise NonFiniteError(
                    f"step {step + 1}: loss {metrics['loss']}, gradient norm {metrics['grad_norm']}: not finite. "
                    f"Batch records: {list(map(str, ids))}. Stopped before saving anything of this step; the last "
                    f"good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}"
                )
            step += 1
            last_loss = float(metrics["loss"])
            logger.step(step, {k: metrics[k] for k in ("loss", "grad_norm", "learning_rate")},
                        time.perf_counter() - began, warmup=step == start + 1)
            if step % int(config.train.log_every) == 0 or step == total:
                logger.flush(step, tokens_per_step, {"data/skipped_records": float(len(skipped.skipped))})
            if eval_every > 0 and (step % eval_every == 0 or step == total):
                run_hooks(step, state)
            if step % int(config.checkpoint.every) == 0 or step == total:
                ckpt.save(step, state, data_iter, config)
                saved = step
            if distributed.any_process(preemption.requested) and step < total:
                if saved != step:
                    ckpt.save(step, state, data_iter, config)
                preempted = True
                if main:
                    print(f"SIGTERM: saved the checkpoint of step {step}; exiting", flush=True)
                break
    finally:
        preemption.restore()
        ckpt.close()
        logger.close()
    return {"step": step, "preempted": preempted, "skipped_records": list(skipped.skipped), "last_loss": last_loss}


def compile_step(step_fn, abstract_state, state_sh, batch_shardings, config, mesh, rules):
    """The step compiled ahead of time for this mesh: state in/out with its shardings and donated."""
    batch_abstract = abstract_batch(config, batch_shardings)
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_sh, batch_shardings),
        out_shardings=(state_sh, replicated(mesh)),
        donate_argnums=(0,),
    )
    with activation_sharding(mesh, rules):
        return jitted.lower(abstract_state, batch_abstract).compile()


def abstract_batch(config, batch_shardings: dict) -> dict:
    """ShapeDtypeStructs of one step's global batch [accum, micro, ...] (float32 latents and embeddings)."""
    accum = int(config.optim.grad_accum_steps)
    micro = int(config.train.global_batch) // accum
    frames = (config.video.num_frames - 1) // 4 + 1
    h, w, c = config.video.height // 16, config.video.width // 16, config.model.in_channels
    shapes = {
        "video": (accum, micro, frames, h, w, c),
        "reference": (accum, micro, 1, h, w, c),
        "garment": (accum, micro, 1, h, w, c),
        "context": (accum, micro, config.model.text_len, config.model.text_dim),
    }
    return {k: jax.ShapeDtypeStruct(s, np.float32, sharding=batch_shardings[k]) for k, s in shapes.items()}


def _make_eval(loss_fn, mesh, rules, state_sh, batch_shardings, eval_batches, accum):
    """A hook (step, state) -> {"eval/loss"}: the stage loss on fixed batches with a fixed key (comparable
    across steps), or None without evaluation batches."""
    if not eval_batches:
        return None
    key = jax.random.key(EVAL_KEY)

    def eval_loss(params, batch):
        losses = jax.lax.map(lambda mb: loss_fn(params, mb, key), batch)
        return losses.mean()

    jitted = jax.jit(eval_loss, in_shardings=(state_sh.params, batch_shardings), out_shardings=replicated(mesh))
    batches = [_to_device({k: v for k, v in b.items() if k != "id"}, accum, batch_shardings) for b in eval_batches]

    def evaluate(step, state):
        with activation_sharding(mesh, rules):
            values = [float(jax.device_get(jitted(state.params, b))) for b in batches]
        return {"eval/loss": float(np.mean(values))}

    return evaluate
