"""Training metrics to stdout (progress, rate, ETA), TensorBoard event files (tensorboardX: no TensorFlow
needed), `metrics.jsonl` (every step's metrics, for tools and tests) and `eval.jsonl` (the evaluations, one
record per evaluated step). Only the main process writes. A value that is not finite (a rate before any step
was timed) is printed but not written to TensorBoard.

A run resumed at step k first drops the records of steps after k from both files (a killed run logged
them after its last checkpoint; the resumed run logs them again), so each file holds each step once."""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _drop_records_after(path: str, step: int) -> None:
    """Rewrite the jsonl file at `path` without records of steps > `step` (and without a torn last line)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
    if len(keep) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)


class MetricLogger:
    def __init__(self, workdir: str, total_steps: int, start_step: int, enabled: bool):
        self.enabled = enabled
        self.total_steps = total_steps
        self.start_step = start_step
        self.window: dict[str, list[float]] = {}
        self.started = time.perf_counter()
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self.writer = None
        self.jsonl = self.eval_jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
            path = os.path.join(workdir, "metrics.jsonl")
            _drop_records_after(path, start_step)
            self.jsonl = open(path, "a")
            path = os.path.join(workdir, "eval.jsonl")
            _drop_records_after(path, start_step)
            self.eval_jsonl = open(path, "a")

    def step(self, step: int, metrics: dict[str, float], step_seconds: float, warmup: bool) -> None:
        """Record one optimizer step; `warmup` steps (the first of a run: buffers, caches, data start-up) are
        left out of the step time and rates."""
        for key, value in metrics.items():
            self.window.setdefault(key, []).append(float(value))
        if not warmup:
            self.timed_steps += 1
            self.timed_seconds += step_seconds
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            self.jsonl.flush()

    def seconds_per_step(self) -> float:
        return self.timed_seconds / self.timed_steps if self.timed_steps else float("nan")

    def flush(self, step: int, tokens_per_step: int, extra: dict[str, float] | None = None) -> None:
        """Write the means of the metrics since the last flush, the rates, progress and ETA."""
        means = {k: sum(v) / len(v) for k, v in self.window.items() if v}
        self.window = {}
        sps = self.seconds_per_step()
        scalars = {
            **{f"train/{k}": v for k, v in means.items()},
            "perf/step_seconds": sps,
            "perf/tokens_per_second": tokens_per_step / sps if sps == sps and sps > 0 else float("nan"),
            **(extra or {}),
        }
        if not self.enabled:
            return
        self._add_scalars(step, scalars)
        done = step / self.total_steps
        eta = _eta((self.total_steps - step) * sps) if sps == sps else "?"
        parts = [f"step {step}/{self.total_steps} ({100 * done:.1f}%)"]
        parts += [f"{k} {v:.6g}" for k, v in means.items()]
        parts += [f"{k} {v:.6g}" for k, v in (extra or {}).items()]
        parts.append(f"{sps:.3f} s/step, {scalars['perf/tokens_per_second']:,.0f} tokens/s, ETA {eta}")
        print(" | ".join(parts), file=sys.stdout, flush=True)

    def _add_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            if math.isfinite(value):  # (tensorboardX warns on NaN / Inf)
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Write extra scalars (evaluation results) now."""
        if not self.enabled:
            return
        self._add_scalars(step, values)
        if self.eval_jsonl is not None:
            self.eval_jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
            self.eval_jsonl.flush()
        print(f"step {step}: " + ", ".join(f"{k} {v:.6g}" for k, v in values.items()), flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for f in (self.jsonl, self.eval_jsonl):
            if f is not None:
                f.close()
