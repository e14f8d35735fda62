"""python -m fc_jax.data.curate --config=curate [--config.field=value ...]: see configs/curate.py.

`--config` is the packaged `curate` config (configs/curate.py) or a config file of the same fields; each
`--config.field=value` overrides one of them. Prints the run's summary (JSON) on stdout.
"""

import json
import logging

from absl import flags

import fc_jax.config
from fc_jax import cli

PROG = "python -m fc_jax.data.curate"

FLAGS = flags.FlagValues()  # private: importing this module defines no global flags
cli.DEFINE_config_file("config", None, "the curation config: curate (configs/curate.py) or a file", FLAGS,
                       resolve=fc_jax.config.config_file)
flags.mark_flags_as_required(["config"], flag_values=FLAGS)


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    from fc_jax.data.curate.run import Curation

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = Curation(FLAGS.config).run()
    print(json.dumps(summary, indent=1))


def run() -> None:
    """Console-script entry point (fc-jax-curate)."""
    main()


if __name__ == "__main__":
    run()
