"""Official MUSIQ checkpoints (google-research `musiq/`, e.g. `spaq_ckpt.npz`) -> `fc_jax.models.musiq.Musiq` params.

The official files are numpy `.npz` archives of the flax optimizer: parameters under `opt/target/<path>` with `/`
between module names (`opt/target/Transformer/encoderblock_0/SelfAttention_0/query/kernel`), optimizer state
under `opt/state/...` (skipped). A params-only archive (keys without the `opt/target/` prefix) loads too. Our
module tree uses the official names, so each leaf maps to the key of the same path. Read with
`np.load(allow_pickle=False)`: nothing is unpickled.
"""

from __future__ import annotations

import os

import numpy as np

from fc_jax.convert.common import CheckpointError, Rule, TensorReader, _flatten, convert
from fc_jax.models.musiq import MusiqConfig, musiq_target_shapes

PREFIX = "opt/target/"


def open_npz(path: str) -> TensorReader:
    """A `.npz` archive as a TensorReader (arrays read on first access)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MUSIQ checkpoint not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a numpy .npz archive ({e})") from e
    arrays = {k: archive[k] for k in archive.files}
    return TensorReader({k: (lambda v=v: v) for k, v in arrays.items()}, {k: v.shape for k, v in arrays.items()}, path)


def convert_checkpoint(src: str, config: MusiqConfig = MusiqConfig()) -> dict:
    """An official MUSIQ `.npz` -> our parameter tree (numpy). CheckpointError lists every mismatch."""
    reader = open_npz(src)
    prefix = PREFIX if any(k.startswith(PREFIX) for k in reader.keys()) else ""
    shapes = musiq_target_shapes(config)
    rules = [Rule(path, prefix + "/".join(path)) for path in _flatten(shapes)]
    return convert(reader, rules, shapes, ignore=lambda k: bool(prefix) and not k.startswith(prefix))
