"""VQ: MUSIQ (SPAQ checkpoint) per frame, frames resized so the long side is at most 512 (PIL bilinear,
antialiased), score = mean MOS / 100 (REFERENCE §7)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fc_jax.eval.metrics.base import MetricResult
from fc_jax.eval.video import evenly_spaced
from fc_jax.models.musiq import MusiqConfig, MusiqScorer

MAX_LONG_SIDE = 512


def limit_long_side(frame: np.ndarray, max_side: int = MAX_LONG_SIDE) -> np.ndarray:
    """uint8 [H, W, 3] -> the same frame shrunk so max(H, W) <= max_side (unchanged if already small)."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


class VideoQuality:
    name = "vq"
    columns = ("vq",)

    def __init__(self, params, checkpoint: str, config: MusiqConfig = MusiqConfig(), frames: int = 0):
        self.scorer = MusiqScorer(params, config)
        self.frames = frames
        self.backend = f"MUSIQ in Flax ({checkpoint}), long side <= {MAX_LONG_SIDE}, mean MOS / 100"

    def __call__(self, sample, video) -> MetricResult:
        idx = evenly_spaced(video.num_frames, self.frames) if self.frames else np.arange(video.num_frames)
        mos = [self.scorer(limit_long_side(video.frames[i])) for i in idx]
        return MetricResult(values={"vq": float(np.mean(mos)) / 100.0}, per_frame={"musiq": mos})
