"""Frame sampling for the metrics (video I/O itself lives in `fc_jax.video`)."""

from __future__ import annotations

import numpy as np

from fc_jax.video import VideoError


def evenly_spaced(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread over `[0, num_frames)` (np.linspace, truncated, as the reference scripts do)."""
    if num_frames < count:
        raise VideoError(f"need at least {count} frames, the video has {num_frames}")
    return np.linspace(0, num_frames - 1, count).astype(int)
