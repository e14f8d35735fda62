"""The training driver: one loop for every stage (`config.stage`, see `fc_jax.training.stage`).

`train(config, workdir)` builds through `fc_jax.training.setup.setup`, resumes from the latest checkpoint or
starts from the stage's initial state, compiles the stage's step, and runs it to `config.train.steps`, logging
(stdout with rate and ETA, TensorBoard events, `metrics.jsonl`), evaluating and checkpointing on the way.

Guarantees, for every stage:
- Exact resume. Step k+1 draws its randomness from `fold_in(seed key, k)` and its batch from the grain
  iterator restored with the state, so a job killed after step k and restarted reproduces an uninterrupted run's
  metrics from step k+1 on, bit for bit (same devices and mesh). After a resume `metrics.jsonl` holds each step
  once (the steps logged after the checkpoint by the killed run are dropped).
- Preemption. SIGTERM or SIGINT (Ctrl-C), on any process, makes the loop save a checkpoint at the step
  reached, wait for it to be written, and return normally (`preempted` in the summary).
- No poisoned checkpoints. A non-finite metric of a step stops the job (`NonFiniteError`, naming the step and
  the batch's records) before anything of that step is saved; the step itself keeps the previous state.
- Damaged checkpoints. A checkpoint that does not read is named in one line, moved aside
  (`checkpoints/<step>.corrupt`) and the run resumes from the newest one that reads; one written for another
  state (the model, optimizer or stage changed) stops the run (`CheckpointMismatch`), touching nothing.
"""

from __future__ import annotations

import signal
import time
from typing import Sequence

import jax

from fc_jax import distributed
from fc_jax.training.logger import MetricLogger
from fc_jax.training.setup import Setup, setup
from fc_jax.training.stage import Hook


class NonFiniteError(RuntimeError):
    """The loss or the gradients of a step were NaN or Inf."""


class Preemption:
    """Remembers SIGTERM and SIGINT instead of dying on them (the name of the first one in `signal_name`)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame):
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _restore_or_init(s: Setup, log) -> tuple:
    """(state, step) from the newest checkpoint that reads (unreadable ones are moved aside, each named in one
    line; see `fc_jax.training.checkpoint`), or the stage's step-0 state when there is none."""
    restored = s.checkpointer.restore_latest(s.abstract, s.data.train, log)
    if restored is None:
        log(f"stage {s.stage.name}: initialising the state")
        return s.stage.initial_state(s), 0
    state, step = restored
    log(f"resumed from {s.checkpointer.step_path(step)}")
    return state, int(jax.device_get(state.step))


def train(config, workdir: str, hooks: Sequence[Hook] = ()) -> dict:
    """Run stage `config.stage` in `workdir`, resuming from its latest checkpoint.

    Every `config.train.eval_every` steps (and at step 0 of a fresh run, and at the end) the evaluation hooks
    run: the stage's own and `hooks`, each `hook(step, state) -> {name: value}` (on every process; the main
    process logs what they return). Returns a summary {stage, step, preempted, skipped_records, last_metrics}."""
    s = setup(config, workdir)
    main = distributed.is_main_process()
    log = (lambda msg: print(msg, flush=True)) if main else (lambda msg: None)
    log(f"stage {s.stage.name}: mesh {dict(s.mesh.shape)} over {jax.device_count()} devices "
        f"({jax.default_backend()}, {jax.process_count()} processes); global batch {config.train.global_batch} = "
        f"{s.accum} x {s.micro}")
    if described := s.stage.describe(s):
        log(f"stage {s.stage.name}: {described}")
    state, start = _restore_or_init(s, log)
    log(f"compiling the {s.stage.name} step ...")
    began = time.perf_counter()
    run = s.stage.compile(s)
    all_hooks = list(s.stage.eval_hooks(s, s.data)) + list(hooks)
    log(f"compiled in {time.perf_counter() - began:.1f} s")

    total, eval_every = int(config.train.steps), int(config.train.eval_every)
    tokens_per_step = int(config.train.global_batch) * s.stage.tokens_per_sample(config)
    logger = MetricLogger(workdir, total, start, enabled=main)
    preemption = Preemption()
    ckpt, data = s.checkpointer, s.data
    skipped = lambda: [] if data.skipped is None else list(data.skipped.skipped)

    def run_hooks(step: int) -> None:
        values = {}
        for hook in all_hooks:
            values.update(hook(step, state))
        if values:
            logger.scalars(step, values)

    step = saved = start
    metrics: dict = {}
    try:
        if eval_every > 0 and start == 0:
            run_hooks(0)
        while step < total:
            began = time.perf_counter()
            local = next(data.train)
            ids = local.get("id", [])
            state, metrics = run(state, s.stage.device_batch(s, local))
            values = {k: float(v) for k, v in metrics.items() if k != "finite"}
            if not metrics["finite"]:
                shown = ", ".join(f"{k} {v}" for k, v in values.items())
                raise NonFiniteError(
                    f"step {step + 1}: {shown}: not finite. Batch records: {list(map(str, ids))}. Stopped before "
                    f"saving anything of this step; the last good checkpoint is step {ckpt.latest_step()} in "
                    f"{ckpt.directory}")
            step += 1
            logger.step(step, values, time.perf_counter() - began, warmup=step == start + 1)
            if step == start + 1:
                log(f"step {step} took {time.perf_counter() - began:.1f} s (the first step includes warm-up); "
                    f"progress every {config.train.log_every} steps")
            if step % int(config.train.log_every) == 0 or step == total:
                logger.flush(step, tokens_per_step, {"data/skipped_records": float(len(skipped()))})
            if eval_every > 0 and (step % eval_every == 0 or step == total):
                run_hooks(step)
            if step % int(config.checkpoint.every) == 0 or step == total:
                ckpt.save(step, state, data.train, config)
                saved = step
            if distributed.any_process(preemption.requested) and step < total:
                if saved != step:
                    ckpt.save(step, state, data.train, config)
                ckpt.wait()
                log(f"{preemption.signal_name or 'preempted'}: saved the checkpoint of step {step}; exiting")
                break
    finally:
        preemption.restore()
        ckpt.close()
        logger.close()
    return {"stage": s.stage.name, "step": step, "preempted": step < total, "skipped_records": skipped(),
            "last_metrics": {k: float(v) for k, v in metrics.items() if k != "finite"}}

