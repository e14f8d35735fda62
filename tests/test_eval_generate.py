"""`python -m fc_jax.eval generate` on a tiny synthetic bench with the tiny model: one video per sample named as
`score` expects, resuming, a missing image reported while the run goes on, multi-garment switching, per-sample
captions reaching the session, and the checks that fail before anything is generated."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")

from fc_jax.config import load_config  # noqa: E402
from fc_jax.eval.__main__ import main  # noqa: E402
from fc_jax.eval.bench import load_bench  # noqa: E402
from fc_jax.eval.generate import (build_session, check_switch_frames, generate_bench,  # noqa: E402
                                  parse_switch_frames, random_text_encoder)
from fc_jax.models import vae  # noqa: E402
from fc_jax.text import EmbeddingCache  # noqa: E402
from fc_jax.video import read_video  # noqa: E402

CAPTIONS = ("a woman in a red shirt walks", "a man turns around slowly", "a person waves at the camera")


@pytest.fixture(scope="module")
def session(tiny_dit):
    """One session for every test (its compiled functions are reused across samples and tests)."""
    _, _, dit_params = tiny_dit
    config = load_config("tiny")
    config.vae.update(dict(encoder_res_blocks=1, decoder_res_blocks=1))  # smaller VAE: quicker compiles
    return build_session(config, dit_params, vae.init_params(config, jax.random.key(2)), seed=1)


class Spy:
    """Wraps a method, recording each call's arguments (and `session.frames_made` at the call)."""

    def __init__(self, session, name):
        self.session, self.fn, self.calls = session, getattr(session, name), []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs, self.session.frames_made))
        return self.fn(*args, **kwargs)


def _spy(monkeypatch, session, name) -> Spy:
    spy = Spy(session, name)
    monkeypatch.setattr(session, name, spy)
    return spy


class CountingEncoder:
    """`random_text_encoder` that records the prompt lists it is asked to encode."""

    def __init__(self, text_len, dim):
        self.encode, self.calls = random_text_encoder(text_len, dim), []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return self.encode(prompts)


def _texts(session, encoder=None):
    cfg = session.config.model
    return EmbeddingCache(cfg.text_len, encoder or CountingEncoder(cfg.text_len, cfg.text_dim))


def _bench(root, captions=CAPTIONS, missing=()):
    """A bench folder: one person and one garment PNG per caption (files named in `missing` are not written)."""
    os.makedirs(root / "images", exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src_image", "cloth_image", "prompt"])
        for i, caption in enumerate(captions):
            for name in (f"person{i}.png", f"cloth{i}.png"):
                if name not in missing:
                    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / "images" / name)
            w.writerow([f"images/person{i}.png", f"images/cloth{i}.png",
                        json.dumps({"caption": {"en_short": caption, "en_long": "..."}})])
    return load_bench(str(root))


def test_one_video_per_sample_each_with_its_caption_and_a_rerun_skips_all(session, tmp_path, monkeypatch):
    samples, out = _bench(tmp_path / "bench"), str(tmp_path / "videos")
    texts = _texts(session)
    start = _spy(monkeypatch, session, "start")
    summary = generate_bench(session, samples, texts, out, num_frames=9)

    assert summary.generated == ["0000", "0001", "0002"] and not summary.skipped and not summary.failed
    assert sorted(os.listdir(out)) == ["0000.mp4", "0001.mp4", "0002.mp4"]  # no .partial left behind
    videos = [read_video(os.path.join(out, f"{s.id}.mp4")).frames for s in samples]
    assert all(v.shape == (9, 64, 32, 3) for v in videos)
    assert not np.array_equal(videos[0], videos[1])  # each sample's own images and caption reach the model
    assert texts.encoder.calls == [list(CAPTIONS)]  # every caption encoded once, in one batch
    contexts = [np.asarray(kw["context"]) for _, kw, _ in start.calls]
    assert [args for args, _, _ in start.calls] == [(s.src_image, s.cloth_image) for s in samples]
    for caption, context in zip(CAPTIONS, contexts):
        np.testing.assert_array_equal(context, texts([caption])[0])
    assert not np.allclose(contexts[0], contexts[1]) and not np.allclose(contexts[1], contexts[2])

    mtimes = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}
    again = generate_bench(session, samples, texts, out, num_frames=9)
    assert again.skipped == ["0000", "0001", "0002"] and not again.generated and not again.failed
    assert len(start.calls) == 3 and len(texts.encoder.calls) == 1  # nothing started or encoded again
    assert {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)} == mtimes


def test_a_missing_image_is_reported_and_the_other_samples_are_made(session, tmp_path, capsys):
    samples = _bench(tmp_path / "bench", missing=("person1.png",))
    out = str(tmp_path / "videos")
    summary = generate_bench(session, samples, _texts(session), out, num_frames=9)
    assert summary.generated == ["0000", "0002"]
    assert list(summary.failed) == ["0001"] and samples[1].src_image in summary.failed["0001"]
    assert "image not found" in summary.failed["0001"]
    assert sorted(os.listdir(out)) == ["0000.mp4", "0002.mp4"]
    assert f"0001: FAILED: src_image: image not found: {samples[1].src_image}" in capsys.readouterr().err
    assert summary.as_json()["failures"] == {"0001": summary.failed["0001"]}

    # multi-garment mode: a missing garment to switch to (sample 0 switches to sample 1's) fails that sample too
    samples = _bench(tmp_path / "bench2", missing=("cloth1.png",))
    summary = generate_bench(session, samples, _texts(session), str(tmp_path / "videos2"), num_frames=21,
                             switch_frames=(9,), limit=1)
    assert not summary.generated
    assert summary.failed == {"0000": f"garment of the switch at frame 9: image not found: {samples[1].cloth_image}"}


def test_multi_garment_mode_switches_to_the_next_samples_garments(session, tmp_path, monkeypatch):
    samples, out = _bench(tmp_path / "bench"), str(tmp_path / "videos")
    switch = _spy(monkeypatch, session, "switch_garment")
    summary = generate_bench(session, samples, _texts(session), out, num_frames=21, switch_frames=(9,))
    assert summary.generated == ["0000", "0001", "0002"] and summary.as_json()["switch_frames"] == [9]
    # sample i switches, after its first 9 frames, to sample i+1's garment (wrapping around)
    assert [(args, frames) for args, _, frames in switch.calls] == [
        ((samples[1].cloth_image,), 9), ((samples[2].cloth_image,), 9), ((samples[0].cloth_image,), 9)]
    for s in samples:
        assert read_video(os.path.join(out, f"{s.id}.mp4")).num_frames == 21


def test_a_caption_missing_from_the_cache_fails_before_any_video(session, tmp_path, monkeypatch):
    samples, out = _bench(tmp_path / "bench"), str(tmp_path / "videos")
    full = _texts(session)
    full(list(CAPTIONS[:2]))
    full.save(str(tmp_path / "text_cache.npz"))
    cache_only = EmbeddingCache.load(str(tmp_path / "text_cache.npz"))  # no encoder: serves only its prompts
    start = _spy(monkeypatch, session, "start")
    with pytest.raises(ValueError, match=f"1 caption.*no encoder \\(umt5/\\) for them: '{CAPTIONS[2]}'$"):
        generate_bench(session, samples, cache_only, out, num_frames=9)
    assert not start.calls and not os.path.exists(out)


def test_bad_switch_frames_and_contexts_are_named(session):
    assert parse_switch_frames("40, 80") == (40, 80) and parse_switch_frames("") == ()
    with pytest.raises(ValueError, match="'x'"):
        parse_switch_frames("40,x")
    with pytest.raises(ValueError, match="switch frame 0 must be positive"):
        check_switch_frames((0,), 81, 3)
    with pytest.raises(ValueError, match="switch frame 81 must be below the video's 81 frames"):
        check_switch_frames((40, 81), 81, 3)
    with pytest.raises(ValueError, match="must increase; found 30 after 40"):
        check_switch_frames((40, 30), 81, 3)
    with pytest.raises(ValueError, match="same chunk"):
        check_switch_frames((10, 12), 81, 3)
    with pytest.raises(ValueError, match=r"context must have the session's shape \(1, 16, 32\); found \(1, 8, 32\)"):
        session.start(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), context=np.zeros((1, 8, 32)))


def test_the_cli_needs_a_checkpoint_or_random_weights(tmp_path):
    _bench(tmp_path / "bench", captions=CAPTIONS[:1])
    args = ["generate", f"--bench={tmp_path / 'bench'}", f"--out={tmp_path / 'videos'}", "--config=tiny"]
    with pytest.raises(ValueError, match="--checkpoint is required"):
        main(args)
    with pytest.raises(ValueError, match="not both"):
        main(args + ["--checkpoint=ckpt", "--random_weights"])
    with pytest.raises(ValueError, match="switch frame 9 must be below the video's 9 frames"):
        main(args + ["--random_weights", "--switch_frames=9"])
