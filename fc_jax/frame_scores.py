"""Learned per-frame scores of a video, shared by the evaluation metrics (`fc_jax.eval.metrics`: Aesthetic, VQ)
and the curation's learned filters (`fc_jax.data.curate.filtering`), so both score a clip the same way.

- `AestheticFrames`: the LAION improved-aesthetic predictor on CLIP ViT-L/14 (`fc_jax.models.reward`), `batch`
  frames at a time, pixels mapped to [-1, 1].
- `MusiqFrames`: the MUSIQ mean opinion score (`fc_jax.models.musiq`) one frame at a time, each frame first shrunk
  so its long side is at most 512 (PIL bilinear, antialiased; REFERENCE §7).

Both score `frames` evenly spread frames (`fc_jax.video.evenly_spaced`), or every frame when `frames` is 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from PIL import Image

from fc_jax.models.musiq import MusiqConfig, MusiqScorer
from fc_jax.models.reward import CLIPVisionConfig, aesthetic_frame_reward
from fc_jax.video import evenly_spaced

MAX_LONG_SIDE = 512


def frame_indices(num_frames: int, count: int) -> np.ndarray:
    """The frames to score: `count` evenly spaced ones, or all `num_frames` when `count` is 0."""
    return evenly_spaced(num_frames, count) if count else np.arange(num_frames)


def limit_long_side(frame: np.ndarray, max_side: int = MAX_LONG_SIDE) -> np.ndarray:
    """uint8 [H, W, 3] -> the same frame shrunk so max(H, W) <= max_side (unchanged if already small)."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


class AestheticFrames:
    """uint8 frames [F, H, W, 3] -> the aesthetic score of each scored frame (a list of floats)."""

    def __init__(self, params, config: CLIPVisionConfig, frames: int = 0, batch: int = 8):
        self.reward = aesthetic_frame_reward(params, config)
        self.frames, self.batch = frames, batch

    def __call__(self, frames: np.ndarray) -> list[float]:
        idx = frame_indices(len(frames), self.frames)
        scores = []
        for start in range(0, len(idx), self.batch):
            chunk = frames[idx[start : start + self.batch]].astype(np.float32) / 127.5 - 1.0
            scores += np.asarray(self.reward(jnp.asarray(chunk))).tolist()
        return scores


class MusiqFrames:
    """uint8 frames [F, H, W, 3] -> the MUSIQ mean opinion score of each scored frame (a list of floats)."""

    def __init__(self, params, config: MusiqConfig = MusiqConfig(), frames: int = 0):
        self.scorer = MusiqScorer(params, config)
        self.frames = frames

    def __call__(self, frames: np.ndarray) -> list[float]:
        return [self.scorer(limit_long_side(frames[i])) for i in frame_indices(len(frames), self.frames)]
