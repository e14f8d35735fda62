"""The HGC-Bench layout (REFERENCE §5): `meta_data.csv` with columns `src_image` (the person), `cloth_image` (the
garment) and `prompt` (JSON; `['caption']['en_short']` is the caption), image paths relative to the csv's folder.
An optional `spec` column holds a tiny-world spec as JSON (`fc_jax.eval.tinyworld`; `score --kind=tinyworld`).

A sample's id is its `id` column when the csv has one, else its row number as four digits (`0000`, `0001`, ...);
`score` looks for the video of a sample as `<id>.<ext>` in the videos folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

from PIL import Image
import numpy as np

REQUIRED_COLUMNS = ("src_image", "cloth_image", "prompt")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")


class BenchError(ValueError):
    """The benchmark folder does not have the HGC-Bench layout."""


@dataclasses.dataclass(frozen=True)
class Sample:
    id: str
    src_image: str  # absolute path of the person / reference image
    cloth_image: str  # absolute path of the garment image
    caption: str
    spec: str | None = None  # the `spec` column (tiny-world spec JSON), when the csv has one

    def missing_files(self) -> list[str]:
        return [p for p in (self.src_image, self.cloth_image) if not os.path.isfile(p)]


def _caption(prompt: str, where: str) -> str:
    try:
        return str(json.loads(prompt)["caption"]["en_short"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BenchError(f"{where}: `prompt` must be JSON with ['caption']['en_short'], found {prompt[:80]!r} "
                         f"({type(e).__name__}: {e})") from e


def load_bench(bench_dir: str) -> list[Sample]:
    """Read `bench_dir/meta_data.csv`. Raises BenchError for a missing csv, missing columns or a bad prompt cell;
    missing image files are not an error here (see `Sample.missing_files`): scoring names them per sample."""
    path = os.path.join(bench_dir, "meta_data.csv")
    if not os.path.isfile(path):
        raise BenchError(f"{bench_dir}: no meta_data.csv (expected the HGC-Bench layout: meta_data.csv with "
                         f"columns {', '.join(REQUIRED_COLUMNS)}, images beside it)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise BenchError(f"{path}: missing column(s) {missing}; found {columns}")
        rows = list(reader)
    if not rows:
        raise BenchError(f"{path}: no rows")
    root = os.path.dirname(os.path.abspath(path))
    samples = []
    for i, row in enumerate(rows):
        sid = row.get("id") or f"{i:04d}"
        samples.append(Sample(
            id=sid,
            src_image=os.path.join(root, row["src_image"]),
            cloth_image=os.path.join(root, row["cloth_image"]),
            caption=_caption(row["prompt"], f"{path} row {i + 2}"),
            spec=row.get("spec") or None,
        ))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: sample ids are not unique")
    return samples


def load_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB `[H, W, 3]`; FileNotFoundError / ValueError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{path}: cannot be read as an image ({e})") from e


def find_video(videos_dir: str, sample_id: str) -> str | None:
    """The video file of a sample in `videos_dir` (`<id>.<ext>`), or None."""
    for ext in VIDEO_EXTENSIONS:
        candidate = os.path.join(videos_dir, sample_id + ext)
        if os.path.isfile(candidate):
            return candidate
    return None
