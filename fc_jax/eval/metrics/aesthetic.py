"""Aesthetic: the LAION improved-aesthetic predictor on CLIP ViT-L/14 (`fc_jax.frame_scores.AestheticFrames`), mean
over frames."""

from __future__ import annotations

import numpy as np

from fc_jax.eval.metrics.base import MetricResult
from fc_jax.frame_scores import AestheticFrames
from fc_jax.models.reward import CLIPVisionConfig


class Aesthetic:
    name = "aesthetic"
    columns = ("aesthetic",)

    def __init__(self, params, config: CLIPVisionConfig, source: str, frames: int = 0, batch: int = 8):
        self.scores = AestheticFrames(params, config, frames, batch)
        self.backend = f"CLIP ViT-L/14 + LAION aesthetic MLP in Flax ({source})"

    def __call__(self, sample, video) -> MetricResult:
        scores = self.scores(video.frames)
        return MetricResult({"aesthetic": float(np.mean(scores))}, {"aesthetic": scores})
