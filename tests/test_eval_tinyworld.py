"""`python -m fc_jax.eval score --kind=tinyworld` end to end on a small tiny-world bench (`tinyworld-bench`): the
ground truth, written losslessly (libx264rgb at qp 0; H.264 4:2:0 shifts colours at every edge, see
`fc_jax.eval.tinyworld`), scores about ideal; corrupted videos score worse in the column they corrupt; bad input
(no video, wrong frame count, no spec column, a bad spec) is named; a rerun scores nothing new; a switch bench."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("matplotlib")

from fc_jax.eval import tinyworld as T  # noqa: E402
from fc_jax.eval.__main__ import main  # noqa: E402
from fc_jax.eval.bench import BenchError, load_bench  # noqa: E402
from fc_jax.video import write_video  # noqa: E402
from fc_jax.tinyworld import world as W  # noqa: E402
from fc_jax.tinyworld.render import render_sample  # noqa: E402
from fc_jax.tinyworld.spec import spec_from_json  # noqa: E402
from fc_jax.video import read_video  # noqa: E402

GEOMETRY = ["--height=64", "--width=64", "--num_frames=13"]
TABLE = [key for key, _ in T.TABLE_COLUMNS]


def _write_lossless(path, frames):
    write_video(str(path), frames, lossless=True)


def _score(bench, videos, out, *extra):
    main(["score", "--kind=tinyworld", f"--bench={bench}", f"--videos={videos}", f"--out={out}", *extra])
    return json.loads((out / "report.json").read_text())


def _values(report):
    return {s["id"]: s["values"] for s in report["samples"]}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A 4-sample held-out bench (stand, turn, jump, walk_left at 64x64x13), its ground truth and its GT report."""
    root = tmp_path_factory.mktemp("tinyworld")
    main(["tinyworld-bench", f"--out={root / 'bench'}", "--count=4", *GEOMETRY])
    samples = load_bench(str(root / "bench"))
    truth = {s.id: render_sample(spec_from_json(s.spec)) for s in samples}
    os.makedirs(root / "gt")
    for sid, g in truth.items():
        _write_lossless(root / "gt" / f"{sid}.mp4", g.video)
    report = _score(root / "bench", root / "gt", root / "gt_out")
    return root, samples, truth, report


def test_the_bench_folder_has_hgc_bench_columns_plus_the_spec(bench):
    root, samples, truth, _ = bench
    rows = list(csv.DictReader(open(root / "bench" / "meta_data.csv")))
    assert list(rows[0]) == ["id", "src_image", "cloth_image", "prompt", "spec"] and len(samples) == 4
    for s in samples:
        g = truth[s.id]
        assert s.id == f"tinyworld-{g.spec.seed:08d}" and s.caption == f"{g.dynamic_caption} {g.static_caption}"
        assert np.array_equal(np.asarray(Image.open(s.src_image)), g.reference)
        assert np.array_equal(np.asarray(Image.open(s.cloth_image)), g.garment)
        assert read_video(str(root / "gt" / f"{s.id}.mp4")).frames.tolist() == g.video.tolist()  # lossless
    assert [g.spec.motion.kind for g in truth.values()] == ["stand", "turn", "jump", "walk_left"]


def test_ground_truth_scores_about_ideal_with_the_report_files(bench):
    root, samples, truth, report = bench
    out = root / "gt_out"
    assert report["errors"] == {} and report["count"]["id/id"] == 4
    for sid, v in _values(report).items():
        assert v["motion/direction_ok"] == 1.0 and v["garment/colour"] >= 0.99, (sid, v)
        assert all(v[k] >= 0.95 for k in TABLE), (sid, {k: v[k] for k in TABLE})
    md = (out / "report.md").read_text()
    assert md.startswith("# Tiny-world bench report")
    assert "| method | ID | Motion | Amp. | Smoo. | VQ | HGC | LGC | NTP |" in md and "| **ours** | 0.9" in md
    assert "Columns: fc_jax.tinyworld.metrics.evaluate values: ID = id/id (paper: Cur.)" in md
    assert "Switch" not in md and "FashionChameleon" not in md
    rows = list(csv.DictReader(open(out / "per_sample.csv")))
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert list(rows[0])[:3] == ["id", "id/id", "motion/motion_alignment"] and float(rows[0]["vq/vq"]) > 0.99
    png = out / f"curves_{samples[0].id}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[1] > 200
    record = json.loads((out / "samples" / f"{samples[3].id}.json").read_text())["metrics"]["tinyworld"]
    curves = record["per_frame"]
    assert len(curves["vq"]) == len(curves["garment_colour"]) == 13 and min(curves["garment_colour"]) >= 0.99
    assert curves["centre_x"][-1] < curves["centre_x"][0] - 5  # walks to the left
    assert record["info"]["motion"] == truth[samples[3].id].dynamic_caption


def test_a_rerun_scores_nothing_new(bench, monkeypatch):
    root, samples, _, report = bench
    before = {s.id: (root / "gt_out" / "samples" / f"{s.id}.json").read_text() for s in samples}

    def fail(*args):
        raise AssertionError("a resumed run scored a sample again")

    monkeypatch.setattr(T.TinyWorldMetric, "__call__", fail)
    again = _score(root / "bench", root / "gt", root / "gt_out")
    assert again["mean"] == report["mean"] and again["errors"] == {}
    assert {s.id: (root / "gt_out" / "samples" / f"{s.id}.json").read_text() for s in samples} == before


def test_corrupted_videos_score_worse_and_bad_videos_are_named(bench):
    root, samples, truth, report = bench
    stand, turn, jump, walk = (s.id for s in samples)
    bad = root / "bad"
    os.makedirs(bad)
    spec = truth[stand].spec  # a solid dress: repaint it in another garment colour
    colour = next(c for c in W.GARMENT_COLOURS if c not in spec.target.colours)
    wrong = render_sample(dataclasses.replace(spec, target=dataclasses.replace(spec.target, colour=colour)))
    _write_lossless(bad / f"{stand}.mp4", wrong.video)
    _write_lossless(bad / f"{walk}.mp4", truth[walk].video[::-1])  # walks the other way
    _write_lossless(bad / f"{jump}.mp4", truth[jump].video[:9])  # too short; no video for `turn`
    worse = _score(root / "bench", bad, root / "bad_out")
    gt, got = _values(report), _values(worse)
    assert got[stand]["garment/colour"] < 0.1 < 0.9 < gt[stand]["garment/colour"]
    assert got[stand]["garment/hgc"] < gt[stand]["garment/hgc"] - 0.4
    assert got[walk]["motion/direction_ok"] == 0.0 and got[walk]["motion/motion_alignment"] == 0.0
    assert got[walk]["garment/hgc"] >= 0.95  # the garment is still right
    errors = worse["errors"]["tinyworld"]["samples"]
    assert f"no video for sample {turn}" in errors[turn]
    assert f"{jump}.mp4: 9 frames of 64x64; the sample's spec renders 13 frames of 64x64" in errors[jump]
    assert worse["count"]["id/id"] == 2 and f"{turn}: no video" in (root / "bad_out" / "report.md").read_text()


def test_a_bench_without_specs_is_refused_with_the_reason(tmp_path, bench):
    root, samples, _, _ = bench
    plain = tmp_path / "plain"
    os.makedirs(plain)
    rows = list(csv.DictReader(open(root / "bench" / "meta_data.csv")))
    with open(plain / "meta_data.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["src_image", "cloth_image", "prompt"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(BenchError, match=r"--kind=tinyworld needs a `spec` column .*the csv has none"):
        _score(plain, root / "gt", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")
    rows[1]["spec"] = '{"seed": 3}'
    with open(plain / "meta_data.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(BenchError, match=rf"sample {samples[1].id}: `spec` is not a tiny-world spec, found .*KeyError"):
        _score(plain, root / "gt", tmp_path / "out")


def test_a_switch_bench_reports_the_switch(tmp_path):
    ids = T.write_tinyworld_bench(str(tmp_path / "bench"), count=1, height=64, width=64, num_frames=13,
                                  switch_frame=6)
    (sample,) = load_bench(str(tmp_path / "bench"))
    g = render_sample(spec_from_json(sample.spec))
    assert sample.id == ids[0] and g.spec.switch_frame == 6
    with open(tmp_path / "bench" / "meta_data.csv") as f:
        switch_image = next(csv.DictReader(f))["switch_image"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "bench" / switch_image)), g.switch_garment)
    os.makedirs(tmp_path / "videos")
    _write_lossless(tmp_path / "videos" / f"{sample.id}.mp4", g.video)
    report = _score(tmp_path / "bench", tmp_path / "videos", tmp_path / "out")
    v = _values(report)[sample.id]
    assert v["switch/latency"] == 0 and v["switch/leakage"] <= 0.05 and v["garment_after/hgc"] >= 0.9
    assert "Switch latency (frames) 0.0000" in (tmp_path / "out" / "report.md").read_text()
    curve = json.loads((tmp_path / "out" / "samples" / f"{sample.id}.json").read_text())
    assert min(curve["metrics"]["tinyworld"]["per_frame"]["garment_colour"]) >= 0.9  # either side of the switch
