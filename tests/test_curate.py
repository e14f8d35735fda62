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
import pytest
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


def _curate_config(tmp_path, stubs):
    """The in-process pipeline's config: raw videos under tmp_path/raw, the stubs as VLM and edit servers."""
    c = config(tmp_path, workers=1)
    c.input_glob = str(tmp_path / "raw" / "*.mp4")
    c.vlm.update(dict(base_url=stubs.url, model="stub-vlm", max_retries=1, backoff=0.01))
    c.edit.update(dict(base_url=stubs.url, model="stub-edit", max_retries=3, backoff=0.01))
    return c


def _read_ids(data_dir, num_frames, size):
    """The ids of every example of the data set under data_dir, read through the training data pipeline."""
    from fc_jax.data.pipeline import triplet_pipeline
    from fc_jax.data.triplets import open_builder

    it, skipped = triplet_pipeline(open_builder("triplets", str(data_dir)), "train", num_frames=num_frames,
                                   height=size, width=size, batch_size=2, num_threads=1, prefetch=1)
    ids = [str(i.decode() if isinstance(i, bytes) else i) for batch in it for i in batch["id"]]
    assert not skipped.skipped
    return ids


def test_raw_videos_added_later_extend_the_data_set(tmp_path):
    from fc_jax.data.curate.manifest import Manifest
    from fc_jax.data.curate.run import Curation

    raw = tmp_path / "raw"
    raw.mkdir()
    write_video(str(raw / "a.mp4"), frames("moving"))
    write_video(str(raw / "b.mp4"), frames("moving")[::-1])
    stubs = Stubs()
    try:
        c = _curate_config(tmp_path, stubs)
        first = Curation(c).run()["notes"]["dataset"]
        write_video(str(raw / "c.mp4"), frames("moving", tint=GREEN))
        second = Curation(c).run()["notes"]["dataset"]
        third = Curation(c).run()["notes"]["dataset"]
    finally:
        stubs.close()
    assert (first["new_part"], first["new_examples"]) == ("part-00000", 2)
    assert (second["new_part"], second["new_examples"], second["parts"]) == ("part-00001", 1,
                                                                             ["part-00000", "part-00001"])
    assert (third["new_part"], third["new_examples"]) == (None, 0)
    # The old clips were neither captioned nor written again; the new one went into the new part only.
    assert sorted(stubs.calls["caption"]) == ["green", "plain", "plain"]
    manifest = Manifest(str(tmp_path / "work" / "manifest.sqlite"))
    parts = {item.split("-")[0]: out["part"] for item, _, out in manifest.done("write")}
    manifest.close()
    assert parts == {"a": "part-00000", "b": "part-00000", "c": "part-00001"}
    ids = _read_ids(tmp_path / "work" / "dataset", 17, 256)
    assert sorted(ids) == sorted(set(ids)) and sorted(i.split("-")[0] for i in ids) == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------------------------
# The write stage killed between writing a part and recording it.


def _finished_clips(work, names, geometry):
    """A manifest whose clips `names` passed all four stages (tiny clips and images made here)."""
    from fc_jax.data.curate.manifest import Manifest

    os.makedirs(work, exist_ok=True)
    manifest = Manifest(os.path.join(work, "manifest.sqlite"))
    shot = frames("moving", n=geometry.num_frames, size=geometry.height)
    for name in names:
        item, base = f"{name}/s000", os.path.join(work, name)
        write_video(base + ".mp4", shot)
        Image.fromarray(shot[0]).save(base + ".png")
        info = {"video": base + ".mp4", "parent": name, "frames": [0, geometry.num_frames], "fps": 24.0}
        manifest.finish(item, "filter", "done", {"clip": {"video": base + ".mp4"}},
                        new_items=[(item, "clip", name, info)])
        manifest.finish(item, "caption", "done", {k: f"{k} {name}" for k in ("static_short", "static_long",
                                                                              "dynamic_short", "dynamic_long")})
        manifest.finish(item, "tryoff", "done", {"garment": base + ".png", "verdict": {"garment_type": "upper"}})
        manifest.finish(item, "tryon", "done", {"reference": base + ".png", "garment_from": "other/s000",
                                                "verdict": {}})
    return manifest


def test_write_stage_survives_a_kill_at_any_point(tmp_path, monkeypatch):
    from fc_jax.data.curate import write
    from fc_jax.data.curate.manifest import Manifest

    geometry = config(tmp_path).dataset
    geometry.update(num_frames=5, height=32, width=32)
    work, dataset = str(tmp_path / "work"), str(tmp_path / "work" / "dataset")
    manifest = _finished_clips(work, ["a", "b"], geometry)
    run = lambda: write.write_new_part(manifest, dataset, geometry, "train")

    def killed(*args):
        raise KeyboardInterrupt("killed")

    # Killed after the TFDS write, before the part is moved into place: the temporary folder is cleaned up.
    with monkeypatch.context() as m:
        m.setattr(write, "publish", killed)
        with pytest.raises(KeyboardInterrupt):
            run()
    assert os.listdir(dataset) == [".tmp-part-00000"] and not manifest.done("write")
    # Killed after the move, before the manifest rows: the complete part is recognised and recorded, not rewritten.
    with monkeypatch.context() as m:
        m.setattr(Manifest, "finish_all", killed)
        with pytest.raises(KeyboardInterrupt):
            run()
    assert os.listdir(dataset) == ["part-00000"] and not manifest.done("write")
    assert run() == {"data_dir": dataset, "parts": ["part-00000"], "new_part": None, "new_examples": 0}
    assert {out["part"] for *_, out in manifest.done("write")} == {"part-00000"}
    # A new clip, killed again before its rows, and its part no longer complete: the part is deleted and rewritten.
    _finished_clips(work, ["c"], geometry).close()
    with monkeypatch.context() as m:
        m.setattr(Manifest, "finish_all", killed)
        with pytest.raises(KeyboardInterrupt):
            run()
    with open(os.path.join(dataset, "part-00001", write.ITEMS), "w") as f:
        json.dump(["c/s000", "a/s000"], f)
    assert run()["new_part"] == "part-00001"
    assert json.loads((tmp_path / "work" / "dataset" / "part-00001" / write.ITEMS).read_text()) == ["c/s000"]
    ids = _read_ids(dataset, 5, 32)
    assert sorted(ids) == ["a/s000", "b/s000", "c/s000"]
    # A record is named by its part.
    from fc_jax.data.triplets import open_builder, record_name

    assert "(part-00001/fashion_triplets-train.array_record-00000-of-00001 record 0)" in record_name(
        open_builder("triplets", dataset), "train", 2)
    manifest.close()


# ---------------------------------------------------------------------------------------------------------------
# Learned filters and CLIP retrieval with tiny random weights in the formats their loaders read.


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A transformers CLIPVisionModelWithProjection folder (safetensors), a LAION head .pth, a MUSIQ .npz."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from fc_jax.convert.common import _flatten
    from fc_jax.models.musiq import musiq_target_shapes

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    clip = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
        patch_size=14, projection_dim=768))
    clip.save_pretrained(root / "clip")
    widths = [768, 1024, 128, 64, 16, 1]
    head = {}
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(widths, widths[1:])):
        head[f"layers.{index}.weight"] = torch.randn(n_out, n_in) / n_in**0.5
        head[f"layers.{index}.bias"] = torch.zeros(n_out)
    torch.save(head, root / "head.pth")
    musiq_model = dict(hidden_size=32, mlp_dim=48, num_heads=2, num_layers=2, grid_size=4, longer_side_lengths=[32])
    rng = np.random.default_rng(0)
    shapes = musiq_target_shapes(filtering.musiq_config(json.dumps(musiq_model)))
    np.savez(root / "musiq.npz", **{"opt/target/" + "/".join(k): 0.1 * rng.normal(size=v.shape).astype(np.float32)
                                    for k, v in _flatten(shapes).items()})
    return root, json.dumps(musiq_model)


def test_learned_filters_reject_under_threshold_with_the_reason(tmp_path, tiny_weights):
    root, musiq_model = tiny_weights
    cfg = config(tmp_path, aesthetic_clip=str(root / "clip"), aesthetic_head=str(root / "head.pth"),
                 aesthetic_frames=2, musiq_checkpoint=str(root / "musiq.npz"), musiq_model=musiq_model,
                 musiq_frames=1, min_aesthetic=-1e9, min_musiq=-1e9).filter
    scorers = filtering.Scorers(cfg)
    clip = frames("moving", n=9, size=64)
    one_face = lambda image: 1  # the person check is tested on its own above
    measured, reason = filtering.check_clip(clip, 24.0, cfg, one_face, scorers)
    assert reason == "" and all(isinstance(measured[k], float) for k in ("aesthetic", "musiq"))
    cfg.min_aesthetic = measured["aesthetic"] + 1.0
    _, reason = filtering.check_clip(clip, 24.0, cfg, one_face, scorers)
    assert reason == f"aesthetic: {measured['aesthetic']:.3f} < {cfg.min_aesthetic}"
    cfg.min_aesthetic, cfg.min_musiq = -1e9, measured["musiq"] + 1.0
    _, reason = filtering.check_clip(clip, 24.0, cfg, one_face, scorers)
    assert reason == f"musiq: {measured['musiq']:.3f} < {cfg.min_musiq}"
    with pytest.raises(ValueError, match="fields among"):
        filtering.musiq_config('{"hidden": 8}')


def test_clip_retrieval_picks_the_dissimilar_garment_of_the_same_type(tiny_weights):
    from fc_jax.data.curate import tryon

    root, _ = tiny_weights
    embed = tryon.ClipEmbedder(str(root / "clip"))
    own = frames("static", n=1, size=64)[0]
    near = np.clip(own.astype(int) + np.random.default_rng(0).integers(-3, 4, own.shape), 0, 255).astype(np.uint8)
    far = np.asarray(Image.fromarray(data.coffee()).resize((64, 64)))
    e_own = embed(own)
    assert e_own.shape == (768,) and np.linalg.norm(e_own) == pytest.approx(1.0, abs=1e-5)
    pool = [{"id": "near/s000", "parent": "near", "garment_type": "upper", "embedding": embed(near)},
            {"id": "far/s000", "parent": "far", "garment_type": "upper", "embedding": embed(far)},
            {"id": "dress/s000", "parent": "dress", "garment_type": "dress", "embedding": embed(far)[::-1]}]
    chosen = tryon.choose_garment("own/s000", "own", "upper", e_own, pool, candidates=1, seed=0)
    assert chosen["id"] == "far/s000"


# ---------------------------------------------------------------------------------------------------------------
# The generic JSON-over-HTTP edit backend.


class JSONEditStub:
    """POST / answers from `plan` (status, body bytes) in turn; the requests' JSON is kept."""

    def __init__(self, plan):
        self.plan, self.requests = list(plan), []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                stub.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, body = stub.plan.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/edit"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_json_edit_backend_retries_and_records_malformed_replies(tmp_path):
    from fc_jax.data.curate.edit_backend import HTTPEditBackend
    from fc_jax.data.curate.manifest import Manifest
    from fc_jax.data.curate.run import _guarded

    image = frames("static", n=1, size=32)[0]
    buf = io.BytesIO()
    Image.fromarray(image[::-1]).save(buf, format="PNG")
    png = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    stub = JSONEditStub([(503, b'{"error": "busy"}'), (200, json.dumps({"image": png}).encode()),
                         (200, b'{"result": "done"}'), (200, b"<html>oops</html>")])
    try:
        c = config(tmp_path).edit
        c.update(dict(kind="json", base_url=stub.url, model="stub-edit", max_retries=2, backoff=0.01))
        backend = HTTPEditBackend(c)
        np.testing.assert_array_equal(backend.edit("flip it", [image]), image[::-1])
        assert backend.stats == {"requests": 2, "retries": 1}
        request = stub.requests[-1]
        assert (request["model"], request["prompt"]) == ("stub-edit", "flip it")
        np.testing.assert_array_equal(decode_data_url(request["images"][0]), image)
        manifest = Manifest(str(tmp_path / "manifest.sqlite"))
        for item in ("no-image", "not-json"):
            _guarded(manifest, "tryoff", item, lambda: ({"shape": backend.edit("x", [image]).shape}, ""))
    finally:
        stub.close()
    rows = {r["item"]: r for r in manifest.rows()}
    manifest.close()
    assert rows["no-image"]["status"] == rows["not-json"]["status"] == "rejected"
    assert "the answer holds no image" in rows["no-image"]["reason"]
    assert "not JSON" in rows["not-json"]["reason"] and backend.stats["retries"] == 1
