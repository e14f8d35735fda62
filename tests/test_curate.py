"""Data curation (fc_jax.data.curate): stage 1 on synthetic videos, the one-person rule on a real photograph,
and the whole pipeline against loopback VLM and image-edit stubs, killed mid-stage and resumed, read back through
the training pipeline."""

import base64
import io
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image
from skimage import data

from fc_jax.data.curate import filtering
from fc_jax.video import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREEN, RED, BLUE = (0.3, 1.0, 0.3), (1.0, 0.35, 0.35), (0.35, 0.35, 1.0)


def frames(kind, n=24, size=256, tint=None):
    """A camera over the astronaut photograph: still, panning 2 px a frame, or shaking 20 px back and forth."""
    big = np.asarray(Image.fromarray(data.astronaut()).resize((size + 96, size + 96)))
    if tint is not None:
        big = (big * np.asarray(tint)).astype(np.uint8)
    out = []
    for i in range(n):
        x, y = {"static": (48, 48), "moving": (30 + 2 * i, 48), "frantic": (30 + 20 * (i % 2), 48)}[kind]
        out.append(big[y:y + size, x:x + size])
    return np.stack(out)


def config(tmp_path, **filter_overrides):
    c = runpy.run_path(os.path.join(ROOT, "configs", "curate.py"))["get_config"]()
    c.work_dir = str(tmp_path / "work")
    c.dataset.update(num_frames=17, height=256, width=256)
    c.filter.update({**dict(min_height=200, min_seconds=0.5, min_scene_frames=10), **filter_overrides})
    return c


def test_stage1_splits_at_cut_and_rejects_motion_by_config(tmp_path):
    c = config(tmp_path)
    cut = str(tmp_path / "cut.mp4")
    write_video(cut, np.concatenate([frames("moving"), frames("moving", tint=GREEN)]))
    write_video(str(tmp_path / "static.mp4"), frames("static"))
    write_video(str(tmp_path / "frantic.mp4"), frames("frantic"))
    faces, scorers = filtering.FaceCounter(c.filter.face_min_score), filtering.Scorers(c.filter)
    run = lambda name, cfg=c.filter: filtering.filter_video(str(tmp_path / name), c.work_dir, cfg, c.dataset, faces,
                                                            scorers)

    status, outputs, _, clips = run("cut.mp4")
    assert status == "done" and outputs["scenes"] == [(0, 24), (24, 48)]
    assert [(st, why) for _, _, st, _, why in clips] == [("done", ""), ("done", "")]
    assert all(m["aesthetic"] == m["musiq"] == filtering.NOT_CONFIGURED for *_, m, _ in clips)
    assert all(os.path.isfile(m["clip"]["video"]) for *_, m, _ in clips)

    (_, _, st, m, why), = run("static.mp4")[3]
    assert st == "rejected" and why.startswith("motion: too little") and m["motion"] < c.filter.min_motion
    (_, _, st, m, why), = run("frantic.mp4")[3]
    assert st == "rejected" and why.startswith("motion: too much") and m["motion"] > c.filter.max_motion

    # The thresholds are the config's: widen them and the frantic clip passes.
    (_, _, st, m, why), = run("frantic.mp4", config(tmp_path, max_motion=1.0).filter)[3]
    assert (st, why) == ("done", "")
    small = config(tmp_path, min_height=300).filter
    assert run("cut.mp4", small)[2] == "resolution: short side 256 < 300"


def test_one_person_on_a_photograph_none_on_blank():
    faces = filtering.FaceCounter()
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256)))
    assert faces(photo) == 1
    assert faces(np.zeros((256, 256, 3), np.uint8)) == 0


# ---------------------------------------------------------------------------------------------------------------
# Stages 2-4 and resuming, against loopback stubs.


def colour(image: np.ndarray) -> str:
    r, g, b = image.reshape(-1, 3).mean(0)
    return "red" if r > 1.8 * g else "blue" if b > 1.8 * g else "green" if g > 1.8 * r else "plain"


def decode_data_url(url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


class Stubs:
    """One loopback server: /v1/chat/completions (the VLM) and /v1/images/edits (multipart; the edit model).
    Captions of red clips are malformed; try-offs of blue ones are refused (HTTP 400); the first two edits answer
    503; the edit number `block_at` waits until released (the test kills the run meanwhile)."""

    def __init__(self, block_at=None):
        self.calls = {"caption": [], "tryoff_check": [], "tryon_check": [], "edit": []}
        self.block_at, self.blocked, self.release = block_at, threading.Event(), threading.Event()
        self.lock = threading.Lock()
        stubs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = stubs.answer(self.path, body)
                out = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path, body):
        if path.endswith("/images/edits"):
            start = body.index(b"\x89PNG")
            image = np.asarray(Image.open(io.BytesIO(body[start:body.index(b"\r\n--", start)])).convert("RGB"))
            with self.lock:
                self.calls["edit"].append(colour(image))
                number = len(self.calls["edit"])
            if number <= 2:
                return 503, {"error": "warming up"}
            if number == self.block_at:
                self.blocked.set()
                self.release.wait(60)
            tryoff = b'name="image[]"; filename="image1.png"' not in body
            if tryoff and colour(image) == "blue":
                return 400, {"error": {"message": "content policy"}}
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            return 200, {"data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]}
        payload = json.loads(body)
        content = payload["messages"][0]["content"]
        prompt = content[-1]["text"]
        first = colour(decode_data_url(content[0]["image_url"]["url"]))
        if "Describe it" in prompt:
            kind = "caption"
            text = "not json at all" if first == "red" else json.dumps(
                {k: f"{k} of a {first} clip" for k in ("static_short", "static_long", "dynamic_short", "dynamic_long")})
        elif "product photo" in prompt:
            kind, text = "tryoff_check", json.dumps({"same_garment": True, "same_texture": True,
                                                     "garment_type": "Upper", "reason": "ok"})
        else:
            kind, text = "tryon_check", json.dumps({"same_identity": True, "same_pose": True,
                                                    "garment_changed": True, "reason": "ok"})
        with self.lock:
            self.calls[kind].append(first)
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_pipeline_resumes_after_kill_and_reads_back(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_video(str(raw / "cut.mp4"), np.concatenate([frames("moving"), frames("moving", tint=GREEN)]))
    write_video(str(raw / "other.mp4"), frames("moving")[::-1])
    write_video(str(raw / "static.mp4"), frames("static"))
    write_video(str(raw / "redcap.mp4"), frames("moving", tint=RED))
    write_video(str(raw / "blueedit.mp4"), frames("moving", tint=BLUE))
    stubs = Stubs(block_at=5)  # edits: 2 x 503, then try-offs in clip-id order; the 3rd try-off hangs
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(
        "import runpy\n"
        f"def get_config():\n"
        f"    c = runpy.run_path({os.path.join(ROOT, 'configs', 'curate.py')!r})['get_config']()\n"
        f"    c.input_glob = {str(raw / '*.mp4')!r}\n"
        f"    c.work_dir = {str(tmp_path / 'work')!r}\n"
        "    c.dataset.update(num_frames=17, height=256, width=256)\n"
        "    c.filter.update(dict(min_height=200, min_seconds=0.5, min_scene_frames=10, workers=1))\n"
        f"    c.vlm.update(dict(base_url={stubs.url!r}, model='stub-vlm', max_retries=1, backoff=0.01))\n"
        f"    c.edit.update(dict(base_url={stubs.url!r}, model='stub-edit', max_retries=3, backoff=0.01))\n"
        "    c.tryoff.workers = 1\n"
        "    return c\n")
    cmd = [sys.executable, "-m", "fc_jax.data.curate", f"--config={cfg_file}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert stubs.blocked.wait(240), proc.communicate(timeout=60)[0].decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
        stubs.release.set()
        captions_before = list(stubs.calls["caption"])
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        stubs.close()

    # Finished stages were not asked again: the captions (all done before the kill) were requested once each.
    assert stubs.calls["caption"] == captions_before and sorted(captions_before) == ["blue", "green", "plain",
                                                                                      "plain", "red"]
    # Try-off: 4 clips + 2 answered 503 and retried + the one killed in flight and redone; validated once each
    # (the refused blue one never reaches validation).
    assert len(stubs.calls["edit"]) - 3 == 7 and sorted(stubs.calls["tryoff_check"]) == ["green", "plain", "plain"]
    assert len(stubs.calls["tryon_check"]) == 3

    work = tmp_path / "work"
    summary = json.loads((work / "summary.json").read_text())
    assert summary["stages"]["caption"]["reasons"] == {"rejected: malformed VLM answer": 1}
    assert summary["stages"]["tryoff"]["reasons"] == {"rejected: edit failed": 1}
    assert summary["stages"]["tryon"]["done"] == 3
    rejected = [json.loads(line) for line in (work / "rejected.jsonl").read_text().splitlines()]
    assert any(r["stage"] == "tryoff" and "content policy" in r["reason"] for r in rejected)
    assert any(r["stage"] == "filter" and r["reason"].startswith("motion: too little") for r in rejected)

    # The data set reads back through the training data pipeline, every accepted clip exactly once.
    from fc_jax.data.pipeline import triplet_pipeline
    from fc_jax.data.triplets import open_builder

    builder = open_builder("triplets", str(work / "dataset"))
    it, skipped = triplet_pipeline(builder, "train", num_frames=17, height=256, width=256, batch_size=2,
                                   num_threads=1, prefetch=1)
    batches = list(it)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for b in batches for i in b["id"]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    assert {i.split("/")[0].split("-")[0] for i in ids} == {"cut", "other"}
    batch = batches[0]
    assert batch["video"].shape[1:] == (17, 256, 256, 3) and batch["garment_type"][0] in ("upper", b"upper")
    source = json.loads(batch["source"][0])
    assert source["tryon"]["garment_from"].split("/")[0] != ids[0].split("/")[0]
