"""The tiny world as a bench kind: `score --kind=tinyworld` scores videos with the exact tiny-world metrics
(`fc_jax.tinyworld.metrics.evaluate`) into the same report files as HGC-Bench.

The bench folder (`write_tinyworld_bench`, `python -m fc_jax.eval tinyworld-bench`) has HGC-Bench's layout, so
`generate` reads it too: `meta_data.csv` with `id` (`tinyworld-<seed>`), `src_image` (`images/<id>_person.png`,
the reference), `cloth_image` (`images/<id>_garment.png`), `prompt` (`['caption']['en_short']` = the dynamic then
the static caption, as the tiny world trains on), plus `spec` (`spec_to_json`); with a switch, also
`switch_image` (`images/<id>_switch.png`, the garment shown from `spec.switch_frame` on).

One metric, `tinyworld`: every value of `evaluate(video, spec)` ("group/name"), and per-frame curves `vq`
(`vq_score`), `garment_colour` (each frame's garment colour match against the garment it should show) and
`centre_x` (the figure's mean x, px). The table, in the paper's Table 1 order (all in [0, 1], ideal 1):
ID = `id/id` (paper: Cur., identity kept), Motion = `motion/motion_alignment` (GME, the video does what the caption
says), Amp. = `motion/amp_score` and Smoo. = `motion/smoo_score` (relative to the ground truth's), VQ = `vq/vq`
(rendering purity, not MUSIQ), HGC = `garment/hgc` (colour, type), LGC = `garment/lgc` (pattern kind, period),
NTP = `ntp/ntp`. Beside it: `motion/direction_ok`, `garment/colour`; on a switch bench also `garment_after/hgc`,
`garment_after/lgc`, `switch/latency` (frames) and `switch/leakage` (lower is better), `switch/continuity`.

The videos must be lossless: H.264 4:2:0 (`fc_jax.video.write_video`, `generate`) halves the chroma resolution,
which mixes colours across every edge; the ground truth itself then scores as low as 0.46-0.79 on ID, Amp., HGC,
LGC and NTP at 160x128 (0 on HGC at 64x64). Write RGB losslessly (`fc_jax.video.write_video(..., lossless=True)`:
libx264rgb at qp 0); videos are scored as decoded.
"""

from __future__ import annotations

import csv
import json
import os

from PIL import Image

from fc_jax.eval.bench import BenchError, Sample, load_bench
from fc_jax.eval.metrics.base import Metric, MetricResult
from fc_jax.eval.report import Layout
from fc_jax.tinyworld import metrics as M
from fc_jax.tinyworld.dataset import example_id
from fc_jax.tinyworld.render import render_background, render_sample
from fc_jax.tinyworld.spec import (Spec, dynamic_caption, full_caption, garment_phrase, spec_from_json, spec_to_json,
                                   split_specs, with_switch)

TABLE_COLUMNS = (("id/id", "ID"), ("motion/motion_alignment", "Motion"), ("motion/amp_score", "Amp."),
                 ("motion/smoo_score", "Smoo."), ("vq/vq", "VQ"), ("garment/hgc", "HGC"), ("garment/lgc", "LGC"),
                 ("ntp/ntp", "NTP"))
EXTRA_COLUMNS = (("motion/direction_ok", "Direction"), ("garment/colour", "Garment colour"))
SWITCH_COLUMNS = (("garment_after/hgc", "HGC after the switch"), ("garment_after/lgc", "LGC after the switch"),
                  ("switch/latency", "Switch latency (frames)"), ("switch/leakage", "Leakage"),
                  ("switch/continuity", "Continuity"))
_PAPER = {"ID": "Cur.", "Motion": "GME"}


def write_tinyworld_bench(dst: str, split: str = "heldout", count: int = 32, height: int = 160, width: int = 128,
                          num_frames: int = 45, switch_frame: int | None = None, start_seed: int = 0) -> list[str]:
    """Render the first `count` specs of `split` (with a garment switch at `switch_frame`, `spec.with_switch`) and
    write them as a bench folder (module docstring); returns the sample ids."""
    images = os.path.join(dst, "images")
    os.makedirs(images, exist_ok=True)
    rows = []
    for spec in split_specs(split, count, start_seed=start_seed, height=height, width=width, num_frames=num_frames):
        if switch_frame is not None:
            spec = with_switch(spec, switch_frame)
        sample, sid = render_sample(spec), example_id(spec)
        files = {"src_image": ("person", sample.reference), "cloth_image": ("garment", sample.garment),
                 "switch_image": ("switch", sample.switch_garment)}
        row = {"id": sid}
        for column, (what, pixels) in files.items():
            if pixels is not None:
                row[column] = f"images/{sid}_{what}.png"
                Image.fromarray(pixels).save(os.path.join(dst, row[column]))
        caption = full_caption(spec)
        rows.append({**row, "prompt": json.dumps({"caption": {"en_short": caption}}), "spec": spec_to_json(spec)})
    columns = ["id", "src_image", "cloth_image", *(["switch_image"] if switch_frame is not None else []), "prompt",
               "spec"]
    with open(os.path.join(dst, "meta_data.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return [r["id"] for r in rows]


def spec_of_sample(sample: Sample) -> Spec:
    """The tiny-world spec of a bench sample; BenchError naming the sample when it has none or a bad one."""
    if sample.spec is None:
        raise BenchError(f"sample {sample.id} has no tiny-world spec: --kind=tinyworld needs a `spec` column "
                         "(spec_to_json of each sample's spec, as `python -m fc_jax.eval tinyworld-bench` writes)")
    try:
        return spec_from_json(sample.spec)
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"sample {sample.id}: `spec` is not a tiny-world spec, found {sample.spec[:80]!r} "
                         f"({type(e).__name__}: {e})") from e


def load_tinyworld_bench(bench_dir: str) -> list[Sample]:
    """`load_bench`, checking that every sample has a valid spec (BenchError naming what was found)."""
    samples = load_bench(bench_dir)
    if all(s.spec is None for s in samples):
        raise BenchError(f"{bench_dir}/meta_data.csv: --kind=tinyworld needs a `spec` column (tiny-world spec "
                         "JSON, as `python -m fc_jax.eval tinyworld-bench` writes); the csv has none or it is empty")
    for s in samples:
        spec_of_sample(s)
    return samples


def tinyworld_layout(samples: list[Sample]) -> Layout:
    """The report table for these samples: the switch columns only when some spec has a switch."""
    switch = any(spec_of_sample(s).switch_frame is not None for s in samples)
    extra = EXTRA_COLUMNS + (SWITCH_COLUMNS if switch else ())
    columns = ", ".join(f"{label} = {key}" + (f" (paper: {_PAPER[label]})" if label in _PAPER else "")
                        for key, label in TABLE_COLUMNS)
    legend = "Table columns in [0, 1], ideal 1" + ("; switch latency (frames) and leakage: lower is better."
                                                   if switch else ".")
    return Layout("Tiny-world bench report", legend, TABLE_COLUMNS, extra,
                  {key: TinyWorldMetric.name for key, _ in TABLE_COLUMNS + extra},
                  notes={"columns": ("Columns", f"fc_jax.tinyworld.metrics.evaluate values: {columns}"),
                         "videos": ("Videos", "scored as decoded; lossy chroma (H.264 4:2:0) lowers even the "
                                              "ground truth's scores, see fc_jax.eval.tinyworld")})


class TinyWorldMetric(Metric):
    """`evaluate(video, spec)` of a tiny-world sample, with per-frame curves (module docstring)."""

    name = "tinyworld"
    columns = tuple(key for key, _ in TABLE_COLUMNS + EXTRA_COLUMNS + SWITCH_COLUMNS)
    backend = "fc_jax.tinyworld.metrics.evaluate (exact, from pixels, against the sample's spec)"

    def __call__(self, sample: Sample, video) -> MetricResult:
        spec = spec_of_sample(sample)
        frames = video.frames
        found, expected = frames.shape[:3], (spec.num_frames, spec.height, spec.width)
        if tuple(found) != expected:
            raise ValueError(f"{video.path}: {found[0]} frames of {found[1]}x{found[2]}; the sample's spec renders "
                             f"{expected[0]} frames of {expected[1]}x{expected[2]}")
        gt = render_sample(spec)
        values = M.evaluate(frames, spec, ground_truth=gt)
        labels = M.classify(frames, render_background(spec))
        s = spec.switch_frame if spec.switch_frame is not None else len(frames)
        colour = [M.garment_metrics(None, gt.garment if f < s else gt.switch_garment, spec,
                                    labels=labels[f:f + 1])["colour"] for f in range(len(frames))]
        per_frame = {"vq": M.vq_score(frames).tolist(), "garment_colour": colour,
                     "centre_x": M.track(labels).cx.tolist()}
        info = {"motion": dynamic_caption(spec), "garment": garment_phrase(spec.target)}
        return MetricResult(values=values, per_frame=per_frame, info=info)
