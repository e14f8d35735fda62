"""Training entry point: `python -m fc_jax.train --config=NAME[:VARIANT] --workdir=DIR [--config.a.b=value ...]`.

NAME is a packaged config (`sft_teacher`, `teacher_forcing`, `gr_dmd`, ...; e.g. `--config=sft_teacher:tiny`)
or a config file. The config's `stage` picks what runs (`fc_jax.training.stages`); every stage runs in the one
driver (`fc_jax.training.driver.train`).

Resumes from the newest checkpoint in WORKDIR/checkpoints that reads (a damaged one is named, moved aside as
`<step>.corrupt` and the one before it used); writes TensorBoard events to WORKDIR/tensorboard and every step's
metrics to WORKDIR/metrics.jsonl. Exit status: 0 when done or preempted (SIGTERM or Ctrl-C: checkpoint saved), 1
on a non-finite loss or gradient (nothing of that step saved), 2 on an input error (one line: a model config
without training sections, a checkpoint written for other settings, no checkpoint that reads).
"""

from __future__ import annotations

import json
import sys

from absl import flags, logging

import fc_jax.config
from fc_jax import cli

PROG = "python -m fc_jax.train"

FLAGS = flags.FlagValues()  # private: importing fc_jax.train defines no global flags
cli.DEFINE_config_file("config", None, "training config: a packaged name (sft_teacher:tiny) or a file", FLAGS,
                       resolve=fc_jax.config.config_file)
flags.DEFINE_string("workdir", None, "where checkpoints, logs and event files go (local path or gs://)",
                    flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)
cli.DEFINE_debug(FLAGS)

# The sections a training config has beyond a model config's (read by fc_jax.training.setup and the stages).
TRAINING_SECTIONS = ("train", "optim", "checkpoint", "data", "mesh", "sharding", "distributed")


def check_training_config(config) -> None:
    """UserError naming the missing sections when `config` is not a training config (e.g. configs/tiny.py)."""
    missing = [name for name in TRAINING_SECTIONS if name not in config]
    if missing:
        raise cli.UserError(
            f"--config: config '{config.get('name', '?')}' is a model config, not a training config: it has no "
            f"{', '.join(missing)} section(s). Pass a training config, e.g. --config=sft_teacher:tiny, "
            f"teacher_forcing:tiny or gr_dmd:tiny (or their full-size forms without ':tiny')")


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; keep stderr for what matters
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    with cli.user_errors(PROG, FLAGS.debug):
        check_training_config(FLAGS.config)
        from fc_jax.training.checkpoint import CheckpointError
        from fc_jax.training.driver import NonFiniteError, train

        try:
            summary = train(FLAGS.config, FLAGS.workdir)
        except NonFiniteError as e:
            print(f"training stopped: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        except CheckpointError as e:
            raise cli.UserError(str(e)) from e
    print(json.dumps(summary), flush=True)


def run() -> None:
    """Console-script entry point (fc-jax-train)."""
    main()


if __name__ == "__main__":
    run()
