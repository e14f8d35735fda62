"""`python -m fc_jax.eval score` end to end on a small synthetic bench: bad input (a missing image, an unreadable
video, a missing video, a video too short) is named in the report while the run goes on; the report files;
resuming; the benchmark loader's errors."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("matplotlib")
cv2 = pytest.importorskip("cv2")

from fc_jax.eval.__main__ import main  # noqa: E402
from fc_jax.eval.bench import BenchError, load_bench  # noqa: E402
from fc_jax.video import VideoError, read_video, write_video  # noqa: E402
from test_eval_vlm import FakeServer, chat_reply  # noqa: E402


def _write_bench(root, rows):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "meta_data.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src_image", "cloth_image", "prompt"])
        for src, cloth, caption in rows:
            w.writerow([src, cloth, json.dumps({"caption": {"en_short": caption, "en_long": "..."}})])


def _moving(frames=9, k=2):
    tex = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (48, 120, 3), dtype=np.uint8), (9, 9), 2)
    return np.stack([tex[:, 40 - k * t : 40 - k * t + 64] for t in range(frames)])


@pytest.fixture
def bench(tmp_path):
    b, v = tmp_path / "bench", tmp_path / "videos"
    os.makedirs(b / "images")
    Image.fromarray(np.full((32, 24, 3), 60, np.uint8)).save(b / "images" / "person.png")
    Image.fromarray(np.full((32, 24, 3), 200, np.uint8)).save(b / "images" / "dress.png")
    _write_bench(b, [("images/person.png", "images/dress.png", "good"),
                     ("images/person.png", "images/missing_dress.png", "missing garment"),
                     ("images/person.png", "images/dress.png", "unreadable video"),
                     ("images/person.png", "images/dress.png", "no video"),
                     ("images/person.png", "images/dress.png", "one frame")])
    os.makedirs(v)
    write_video(str(v / "0000.mp4"), _moving())
    write_video(str(v / "0001.mp4"), _moving())
    (v / "0002.mp4").write_bytes(b"\x00not an mp4 at all")
    write_video(str(v / "0004.mp4"), _moving(frames=1))
    return b, v


def test_video_roundtrip(tmp_path):
    frames = _moving()
    write_video(str(tmp_path / "a.mp4"), frames, fps=24)
    video = read_video(str(tmp_path / "a.mp4"))
    assert video.frames.shape == frames.shape and video.fps == 24
    assert np.abs(video.frames.astype(int) - frames).mean() < 4  # H.264 at crf 17
    with pytest.raises(VideoError, match="video not found"):
        read_video(str(tmp_path / "nope.mp4"))


def test_score_names_bad_input_and_goes_on(bench, tmp_path, capsys):
    b, v = bench
    out = tmp_path / "out"
    server = FakeServer()
    server.handler = lambda path, payload: chat_reply('{"HGC": 4, "LGC": 2, "NTP": 5}')
    try:
        args = ["score", f"--bench={b}", f"--videos={v}", f"--out={out}", "--metrics=amp,judge,vq",
                f"--vlm_url={server.url}", "--judge_model=judge-7b", "--judge_frames=2", "--plot_sample=0000"]
        main(args)
        report = json.loads((out / "report.json").read_text())
        assert report["num_samples"] == 5
        assert report["count"]["amp"] == 2 and report["count"]["hgc"] == 1
        errors = report["errors"]
        assert "missing_dress.png" in errors["judge"]["samples"]["0001"]
        assert "0002.mp4" in errors["amp"]["samples"]["0002"] and "cannot be decoded" in errors["amp"]["samples"]["0002"]
        assert "no video for sample 0003" in errors["amp"]["samples"]["0003"]
        assert "at least 2 frames, the video has 1" in errors["amp"]["samples"]["0004"]
        assert "need at least 2 frames" in errors["judge"]["samples"]["0004"]
        assert errors["amp"]["by_kind"] == {"VideoError": 2, "missing_video": 1}
        assert report["not_computed"] == {"vq": "no MUSIQ checkpoint (--musiq_checkpoint=spaq_ckpt.npz)"}
        assert report["mean"]["vq"] is None and report["mean"]["lgc"] == 2.0
        assert "judge-7b" in report["backends"]["judge"]
        md = (out / "report.md").read_text()
        assert "| FashionChameleon (paper) | 0.4911 | 0.6839 | 0.7771 | 0.9969 | 0.7483 | 4.6833 | 3.9250 | 4.7625 |" in md
        assert "| **ours** | n/c | n/c |" in md and "4.0000 | 2.0000 | 5.0000 |" in md
        assert "missing_dress.png" in md and "vq: no MUSIQ checkpoint" in md
        rows = list(csv.DictReader(open(out / "per_sample.csv")))
        assert [r["id"] for r in rows] == ["0000", "0001", "0002", "0003", "0004"]
        assert float(rows[0]["amp"]) > 0.3 and rows[2]["amp"] == "" and "cannot be decoded" in rows[2]["errors"]
        png = out / "curves_0000.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[1] > 200
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["errors"] == {"amp": 3, "judge": 4}

        # Resume: nothing that succeeded is recomputed (no judge request); failures are tried again.
        sent = len(server.requests)
        before = (out / "samples" / "0000.json").read_text()
        main(args)
        assert len(server.requests) == sent
        assert (out / "samples" / "0000.json").read_text() == before
    finally:
        server.close()


def test_bench_loader_errors(tmp_path):
    with pytest.raises(BenchError, match="no meta_data.csv"):
        load_bench(str(tmp_path))
    (tmp_path / "meta_data.csv").write_text("src_image,prompt\na.png,{}\n")
    with pytest.raises(BenchError, match=r"missing column\(s\) \['cloth_image'\]; found \['src_image', 'prompt'\]"):
        load_bench(str(tmp_path))
    (tmp_path / "meta_data.csv").write_text('src_image,cloth_image,prompt\na.png,b.png,"{""caption"": {}}"\n')
    with pytest.raises(BenchError, match=r"row 2: `prompt` must be JSON with \['caption'\]\['en_short'\]"):
        load_bench(str(tmp_path))
    _write_bench(tmp_path, [("a.png", "b.png", "a caption")])
    (s,) = load_bench(str(tmp_path))
    assert s.id == "0000" and s.caption == "a caption" and s.missing_files() == [str(tmp_path / "a.png"),
                                                                                  str(tmp_path / "b.png")]
