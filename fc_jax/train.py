"""Training entry point: `python -m fc_jax.train --config=configs/sft_teacher.py[:tiny] --workdir=DIR
[--config.train.steps=N ...]`. The config's `stage` picks what runs (stage 1 "sft" by default).

Resumes from the latest checkpoint in WORKDIR/checkpoints; writes TensorBoard events to WORKDIR/tensorboard and
every step's loss to WORKDIR/metrics.jsonl. Exit status: 0 when done or preempted (SIGTERM: checkpoint saved),
1 on a non-finite loss or gradient (nothing of that step saved).
"""

from __future__ import annotations

import importlib
import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file, e.g. configs/sft_teacher.py:tiny")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and event files go (local path or gs://)")
flags.mark_flags_as_required(["config", "workdir"])

# Stages with a loop of their own (`train(config, workdir) -> summary`); every other `config.stage` runs in
# `fc_jax.training.loop.train`.
OWN_LOOPS = {"gr_dmd": "fc_jax.training.distill"}


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; keep stderr for what matters
        logging.set_verbosity(logging.WARNING)
    from fc_jax.training.loop import NonFiniteError, train

    config = _CONFIG.value
    stage = config.get("stage", "sft")
    if stage in OWN_LOOPS:
        train = importlib.import_module(OWN_LOOPS[stage]).train
    try:
        summary = train(config, _WORKDIR.value)
    except NonFiniteError as e:
        print(f"training stopped: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(json.dumps(summary), flush=True)


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
