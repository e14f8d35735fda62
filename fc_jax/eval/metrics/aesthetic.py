"""Aesthetic: the LAION improved-aesthetic predictor on CLIP ViT-L/14 (`fc_jax.models.reward`), mean over frames."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fc_jax.eval.metrics.base import MetricResult
from fc_jax.eval.video import evenly_spaced
from fc_jax.models.reward import CLIPVisionConfig, aesthetic_frame_reward


class Aesthetic:
    name = "aesthetic"
    columns = ("aesthetic",)

    def __init__(self, params, config: CLIPVisionConfig, source: str, frames: int = 0, batch: int = 8):
        self.reward = aesthetic_frame_reward(params, config)
        self.frames, self.batch = frames, batch
        self.backend = f"CLIP ViT-L/14 + LAION aesthetic MLP in Flax ({source})"

    def __call__(self, sample, video) -> MetricResult:
        idx = evenly_spaced(video.num_frames, self.frames) if self.frames else np.arange(video.num_frames)
        scores = []
        for start in range(0, len(idx), self.batch):
            chunk = video.frames[idx[start : start + self.batch]].astype(np.float32) / 127.5 - 1.0
            scores += np.asarray(self.reward(jnp.asarray(chunk))).tolist()
        return MetricResult({"aesthetic": float(np.mean(scores))}, {"aesthetic": scores})
