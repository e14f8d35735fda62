"""Export one network from a training checkpoint: `python -m fc_jax.export --workdir=DIR --dst=DIR [--step=N]
[--which=NAME] [--vae=DIR (--text_cache=FILE | --umt5=DIR)]`.

Every stage checkpoints its whole state (parameters, optimizer moments, EMA, RNG) under `WORKDIR/checkpoints`;
the next stage (`config.train.init_from`, `config.distill.teacher_from`, `generator_from`) and inference
(`fc_jax.generate --checkpoint=...`, whose `dit/` folder this is) read a bare parameter folder. This reads only
the chosen parameter tree of the chosen step (no optimizer state is loaded: a 5B stage-3 state holds seven
model-sized trees) and writes it with `fc_jax.convert.common.save_params`.

`--which` names a field of the saved state: `params` or `ema_params` (stages 1 and 2), `generator`, `ema` or
`critic` (stage 3). The default is the first of the run's stage's `exports` (`fc_jax.training.stages`; the stage is
read from the config saved with the checkpoint) that the state holds: the EMA where there is one. A LoRA run's tree
(`config.train.trainable=lora`) is written merged, W + alpha/rank·A@B: plain DiT parameters.

With `--vae` (a VAE parameter folder from `python -m fc_jax.convert vae`) and a text source, `--text_cache` (an
`fc_jax.text.EmbeddingCache` .npz holding the prompts to generate with) or `--umt5` (a folder from `python -m
fc_jax.convert umt5`; generate then needs `--tokenizer`), DST becomes a complete generate-ready checkpoint:
`DST/dit` (the exported parameters), `DST/vae`, and `DST/text_cache.npz` or `DST/umt5` (copies), for
`python -m fc_jax.generate --checkpoint=DST`. Every input is checked before anything is read or written.
"""

from __future__ import annotations

import json

from absl import flags

from fc_jax import cli
from fc_jax.training.export import check_export, export_parameters, generate_parts

PROG = "python -m fc_jax.export"

FLAGS = flags.FlagValues()  # private: importing export_parameters defines no global flags
flags.DEFINE_string("workdir", None, "the training run's folder (holds checkpoints/)", flag_values=FLAGS)
flags.DEFINE_string("dst", None, "new folder for the parameters", flag_values=FLAGS)
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=FLAGS)
flags.DEFINE_string("which", None,
                    "state field: params | ema_params | generator | ema | critic (default: the EMA if any)",
                    flag_values=FLAGS)
flags.DEFINE_string("vae", None, "with a text source: VAE parameter folder (fc_jax.convert vae) copied to DST/vae, "
                    "making DST a generate-ready checkpoint with the parameters in DST/dit", flag_values=FLAGS)
flags.DEFINE_string("text_cache", None, "with --vae: EmbeddingCache .npz of the prompts, copied to "
                    "DST/text_cache.npz", flag_values=FLAGS)
flags.DEFINE_string("umt5", None, "with --vae: umT5 parameter folder (fc_jax.convert umt5) copied to DST/umt5",
                    flag_values=FLAGS)
flags.mark_flags_as_required(["workdir", "dst"], flag_values=FLAGS)
cli.DEFINE_debug(FLAGS)


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n")[0])
    with cli.user_errors(PROG, FLAGS.debug):
        try:  # every input checked before anything is read or written
            parts = generate_parts(FLAGS.vae, FLAGS.text_cache, FLAGS.umt5)
            _, step, which = check_export(FLAGS.workdir, FLAGS.dst, FLAGS.step, FLAGS.which)
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            raise cli.UserError(str(e)) from e
        print(json.dumps(export_parameters(FLAGS.workdir, FLAGS.dst, step, which, parts)))


def run() -> None:
    """Console-script entry point (fc-jax-export)."""
    main()


if __name__ == "__main__":
    run()
