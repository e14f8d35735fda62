"""VQ: MUSIQ (SPAQ checkpoint) per frame, frames resized so the long side is at most 512 (PIL bilinear,
antialiased), score = mean MOS / 100 (REFERENCE §7). The per-frame scoring is `fc_jax.frame_scores.MusiqFrames`."""

from __future__ import annotations

import numpy as np

from fc_jax.eval.metrics.base import MetricResult
from fc_jax.frame_scores import MAX_LONG_SIDE, MusiqFrames
from fc_jax.models.musiq import MusiqConfig


class VideoQuality:
    name = "vq"
    columns = ("vq",)

    def __init__(self, params, checkpoint: str, config: MusiqConfig = MusiqConfig(), frames: int = 0):
        self.scores = MusiqFrames(params, config, frames)
        self.backend = f"MUSIQ in Flax ({checkpoint}), long side <= {MAX_LONG_SIDE}, mean MOS / 100"

    def __call__(self, sample, video) -> MetricResult:
        mos = self.scores(video.frames)
        return MetricResult(values={"vq": float(np.mean(mos)) / 100.0}, per_frame={"musiq": mos})
