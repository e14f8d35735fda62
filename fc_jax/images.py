"""Reading and preparing the reference and garment images exactly as the authors' dataset does (REFERENCE §5).

- reference: aspect-ratio resize so the image covers the target, then a centre crop;
- garment: aspect-ratio resize so the image fits inside the target, then centred padding on white.
Both resize bilinearly with antialiasing (PIL) and map uint8 [0, 255] to [-1, 1].
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def load_image(source) -> Image.Image:
    """An RGB PIL image from a path, a PIL image, or a uint8 array [H, W, 3]. Clear errors for anything else."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[-1] != 3 or source.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array [H, W, 3]; got {source.dtype} {source.shape}")
        return Image.fromarray(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:  # PIL raises several types for unreadable files
        raise ValueError(f"cannot read image {path}: {e}") from e


def _to_model_range(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) / 127.5 - 1.0


def reference_image(source, height: int, width: int) -> np.ndarray:
    """[height, width, 3] in [-1, 1]: cover-resize then centre crop."""
    img = load_image(source)
    w, h = img.size
    scale = max(height / h, width / w)
    new_w, new_h = max(width, int(w * scale)), max(height, int(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    return _to_model_range(img.crop((left, top, left + width, top + height)))


def garment_image(source, height: int, width: int) -> np.ndarray:
    """[height, width, 3] in [-1, 1]: fit-resize then centred padding on white."""
    img = load_image(source)
    w, h = img.size
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(img, ((width - new_w) // 2, (height - new_h) // 2))
    return _to_model_range(canvas)


def to_uint8(frames) -> np.ndarray:
    """Frames in [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    frames = np.asarray(frames, np.float32)
    return np.clip(np.round((frames + 1.0) * 127.5), 0, 255).astype(np.uint8)
