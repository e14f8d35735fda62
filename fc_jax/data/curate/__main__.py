"""python -m fc_jax.data.curate --config=configs/curate.py [--config.field=value ...]: see configs/curate.py."""

import json
import logging

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/curate.py", lock_config=True)


def main(argv) -> None:
    del argv
    from fc_jax.data.curate.run import Curation

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = Curation(_CONFIG.value).run()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    app.run(main)
