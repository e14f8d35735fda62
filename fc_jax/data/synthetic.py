"""Small synthetic triplets for tests and smoke runs, deterministic by seed.

- `synthetic_triplets`: pixel triplets in the `FashionTriplets` format: a figure walking across a plain
  background wearing a striped garment; the reference shows the figure (grey clothes) at its first position,
  the garment image shows the stripes on white; captions name the colours and the direction.
- `synthetic_latents`: latent triplets in the `FashionLatents` format, made to be learnable: each video latent
  frame is a smooth, frame-dependent mix of the reference and garment latents plus a little noise, so a model
  that reads the condition frames can predict the clean video. Text embeddings are random.
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

GARMENT_TYPES = ("upper", "lower", "dress")
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 70), "yellow": (230, 200, 40)}


def synthetic_triplets(num: int, num_frames: int, height: int, width: int, seed: int = 0) -> Iterator[dict]:
    """`num` pixel triplets: video uint8 [num_frames, height, width, 3], reference / garment [height, width, 3]."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    for i in range(num):
        c1, c2 = rng.choice(len(names), 2, replace=False)
        garment_type = GARMENT_TYPES[i % len(GARMENT_TYPES)]
        background = rng.integers(60, 200, 3).astype(np.uint8)
        direction = 1 if rng.random() < 0.5 else -1
        fig_h, fig_w = height // 2, max(width // 4, 2)
        top = height // 4
        x0 = int(rng.integers(0, width - fig_w + 1))
        stripes = np.zeros((fig_h, fig_w, 3), np.uint8)
        period = max(fig_h // 4, 1)
        for r in range(fig_h):
            stripes[r] = COLOURS[names[c1]] if (r // period) % 2 == 0 else COLOURS[names[c2]]

        def frame(x: int, clothes: np.ndarray) -> np.ndarray:
            img = np.broadcast_to(background, (height, width, 3)).copy()
            x = int(np.clip(x, 0, width - fig_w))
            img[top : top + fig_h, x : x + fig_w] = clothes
            return img

        step = max(width // (2 * max(num_frames, 1)), 1)
        video = np.stack([frame(x0 + direction * step * k, stripes) for k in range(num_frames)])
        reference = frame(x0, np.full((fig_h, fig_w, 3), 128, np.uint8))
        garment = np.full((height, width, 3), 255, np.uint8)
        garment[top : top + fig_h, (width - fig_w) // 2 : (width - fig_w) // 2 + fig_w] = stripes
        yield {
            "id": f"synthetic-{seed}-{i:06d}",
            "video": video,
            "reference": reference,
            "garment": garment,
            "static_caption": f"a person in a {names[c1]} and {names[c2]} striped {garment_type} garment",
            "dynamic_caption": f"the person walks to the {'right' if direction > 0 else 'left'}",
            "garment_type": garment_type,
            "source": json.dumps({"generator": "synthetic_triplets", "seed": seed, "index": i}),
        }


def synthetic_latents(
    num: int, frames: int, height: int, width: int, channels: int, text_dim: int, seed: int = 0,
    max_text_len: int = 8,
) -> Iterator[dict]:
    """`num` latent triplets: video_latents [frames, height, width, channels], reference / garment latents
    [1, height, width, channels], caption embeddings [n <= max_text_len, text_dim] (float32)."""
    rng = np.random.default_rng(seed)
    phases = np.linspace(0.0, np.pi / 2, frames, dtype=np.float32)
    for i in range(num):
        reference = rng.standard_normal((1, height, width, channels), np.float32)
        garment = rng.standard_normal((1, height, width, channels), np.float32)
        mix = np.cos(phases)[:, None, None, None] * reference + np.sin(phases)[:, None, None, None] * garment
        video = mix + 0.1 * rng.standard_normal((frames, height, width, channels), np.float32)
        n_dynamic = int(rng.integers(1, max_text_len + 1))
        n_full = int(rng.integers(n_dynamic, max_text_len + 1))
        yield {
            "id": f"synthetic-latents-{seed}-{i:06d}",
            "video_latents": video.astype(np.float32),
            "reference_latent": reference,
            "garment_latent": garment,
            "dynamic_embedding": 0.5 * rng.standard_normal((n_dynamic, text_dim), np.float32),
            "full_embedding": 0.5 * rng.standard_normal((n_full, text_dim), np.float32),
            "static_caption": f"synthetic static caption {i}",
            "dynamic_caption": f"synthetic dynamic caption {i}",
            "garment_type": GARMENT_TYPES[i % len(GARMENT_TYPES)],
            "source": json.dumps({"generator": "synthetic_latents", "seed": seed, "index": i}),
        }


def synthetic_empty_prompt(text_dim: int, seed: int = 0) -> np.ndarray:
    """A stand-in empty-prompt embedding [1, text_dim] (the EOS token alone) for synthetic latent data sets."""
    return 0.5 * np.random.default_rng(seed + 10_000).standard_normal((1, text_dim), np.float32)
