"""Reading and preparing the reference and garment images with the authors' resampling (REFERENCE §5).

Two rules, one per place the authors prepare images:
- "inference" (`predictor/infer_ic.py`, the default of `reference_image` / `garment_image`): reference by
  `PIL.ImageOps.fit(..., method=LANCZOS)` (crop to the target aspect, centred, then resize), garment by
  `PIL.ImageOps.pad(...)` (fit inside, bicubic, centred on white);
- "training" (`datasets/fashion_dataset.py`; the importer and curation write data sets with it): reference and
  video frames resized bilinearly (torchvision's `TF.resize` of a PIL image) to `int(side · scale)` so they cover
  the target, then centre-cropped at rounded offsets (`TF.center_crop`); garment resized bilinearly to fit and
  pasted on white at floored offsets. One difference: where `int(side · scale)` falls a pixel short of the target
  the authors' crop pads a black row; here the resized side is at least the target.
Pixels map uint8 [0, 255] to [-1, 1].
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

RULES = ("inference", "training")
WHITE = (255, 255, 255)


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


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown resampling rule {rule!r}; expected one of {RULES}")


def cover_crop(image: Image.Image, height: int, width: int, rule: str) -> Image.Image:
    """`image` resized to cover height x width (aspect kept) and centre-cropped to it, by `rule`."""
    _check_rule(rule)
    if rule == "inference":
        return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    w, h = image.size
    scale = max(height / h, width / w)
    new_w, new_h = max(width, int(w * scale)), max(height, int(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def fit_pad(image: Image.Image, height: int, width: int, rule: str) -> Image.Image:
    """`image` resized to fit inside height x width (aspect kept) and centred on white, by `rule`."""
    _check_rule(rule)
    if rule == "inference":
        return ImageOps.pad(image, (width, height), color=WHITE, centering=(0.5, 0.5))
    w, h = image.size
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), WHITE)
    canvas.paste(image, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def _to_model_range(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) / 127.5 - 1.0


def reference_image(source, height: int, width: int, rule: str = "inference") -> np.ndarray:
    """[height, width, 3] in [-1, 1]: cover, then centre crop (`cover_crop`)."""
    return _to_model_range(cover_crop(load_image(source), height, width, rule))


def garment_image(source, height: int, width: int, rule: str = "inference") -> np.ndarray:
    """[height, width, 3] in [-1, 1]: fit, then centred padding on white (`fit_pad`)."""
    return _to_model_range(fit_pad(load_image(source), height, width, rule))


def to_uint8(frames) -> np.ndarray:
    """Frames in [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    frames = np.asarray(frames, np.float32)
    return np.clip(np.round((frames + 1.0) * 127.5), 0, 255).astype(np.uint8)


@jax.jit
def to_uint8_on_device(frames: jax.Array) -> jax.Array:
    """`to_uint8` as one compiled op where the frames are (round half to even, as numpy): a quarter of the bytes
    then go to the host, and no float copy of the frames is made there (the streaming session's per-chunk step)."""
    return jnp.clip(jnp.round((frames.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
