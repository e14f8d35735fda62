"""Scores a folder of videos against the benchmark, one sample at a time, resumably.

Each sample's results go to `out/samples/<id>.json` as soon as it is scored: values, per-frame curves, extra info,
and for a metric that failed on it the error (the run carries on). A rerun skips the metrics a sample already has
a value for and retries the ones that failed.
"""

from __future__ import annotations

import json
import os

from fc_jax.eval.bench import VIDEO_EXTENSIONS, Sample, find_video
from fc_jax.eval.metrics.base import Metric, Unavailable
from fc_jax.video import read_video


def sample_path(out_dir: str, sample_id: str) -> str:
    return os.path.join(out_dir, "samples", f"{sample_id}.json")


def load_record(out_dir: str, sample: Sample) -> dict:
    path = sample_path(out_dir, sample.id)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"id": sample.id, "caption": sample.caption, "video": None, "metrics": {}}


def _save(out_dir: str, record: dict) -> None:
    path = sample_path(out_dir, record["id"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, allow_nan=True)
    os.replace(path + ".tmp", path)


def _error(e: BaseException) -> dict:
    return {"error": str(e), "error_kind": getattr(e, "kind", type(e).__name__)}


def score_samples(samples: list[Sample], videos_dir: str, out_dir: str, metrics: list[Metric | Unavailable],
                  progress: bool = True) -> list[dict]:
    """Run every available metric on every sample's video; returns the per-sample records."""
    from tqdm import tqdm

    runnable = [m for m in metrics if not isinstance(m, Unavailable)]
    records = []
    bar = tqdm(samples, desc="scoring", unit="video", disable=not progress)
    for sample in bar:
        record = load_record(out_dir, sample)
        todo = [m for m in runnable if "values" not in record["metrics"].get(m.name, {})]
        if todo:
            bar.set_postfix_str(sample.id)
            _score_one(sample, videos_dir, record, todo)
            _save(out_dir, record)
        records.append(record)
    return records


def _score_one(sample: Sample, videos_dir: str, record: dict, todo: list[Metric]) -> None:
    path = find_video(videos_dir, sample.id)
    if path is None:
        err = {"error": f"no video for sample {sample.id} in {videos_dir} (looked for {sample.id}"
                        f"{{{','.join(VIDEO_EXTENSIONS)}}})", "error_kind": "missing_video"}
        record["metrics"].update({m.name: dict(err) for m in todo})
        return
    record["video"] = path
    try:
        video = read_video(path)
    except Exception as e:  # noqa: BLE001 - an unreadable video is reported, the run goes on
        record["metrics"].update({m.name: _error(e) for m in todo})
        return
    record["num_frames"] = video.num_frames
    for metric in todo:
        try:
            result = metric(sample, video)
        except Exception as e:  # noqa: BLE001 - a metric failing on one sample is reported for that sample
            record["metrics"][metric.name] = _error(e)
            continue
        record["metrics"][metric.name] = {"values": result.values, "per_frame": result.per_frame,
                                          "info": result.info}
