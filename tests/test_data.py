"""Data: TFDS ArrayRecord builders and grain pipelines without TensorFlow, bad records named, the authors'
manifest layout, and pre-encoding (random tiny weights) that resumes."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import runpy
import sys

import numpy as np
import pytest

from fc_jax.data import pipeline, synthetic, triplets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEOMETRY = pipeline.LatentGeometry(frames=3, height=4, width=2, channels=48, text_len=16, text_dim=32)


def _latent_dataset(root, examples, empty=None):
    builder = triplets.write_dataset("latents", str(root), {"train": examples})
    np.save(triplets.empty_prompt_path(builder), synthetic.synthetic_empty_prompt(32) if empty is None else empty)
    return builder


def _latents(num, seed=0):
    g = GEOMETRY
    return synthetic.synthetic_latents(num, g.frames, g.height, g.width, g.channels, g.text_dim, seed=seed,
                                       max_text_len=g.text_len)


def _ids(dataset, batches):
    it = iter(dataset)
    return [list(next(it)["id"]) for _ in range(batches)]


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    return _latent_dataset(tmp_path_factory.mktemp("latents"), _latents(24))


def _pipe(builder, **kw):
    args = dict(batch_size=4, seed=7, num_threads=2, prefetch=2)
    args.update(kw)
    return pipeline.latent_pipeline(builder, "train", GEOMETRY, pipeline.load_empty_prompt(builder), **args)


def test_triplets_round_trip_without_tensorflow(tmp_path):
    assert importlib.util.find_spec("tensorflow") is None, "tensorflow must not be installed for this test"
    examples = list(synthetic.synthetic_triplets(5, num_frames=9, height=64, width=32, seed=0))
    builder = triplets.write_dataset("triplets", str(tmp_path), {"train": iter(examples)})
    assert any(f.endswith("array_record-00000-of-00001") for f in os.listdir(builder.data_dir))
    data, skip = pipeline.triplet_pipeline(builder, "train", num_frames=9, height=64, width=32, batch_size=2)
    got = {}
    for batch in data:
        for i, name in enumerate(batch["id"]):
            got[str(name)] = {k: v[i] for k, v in batch.items()}
    assert sorted(got) == sorted(e["id"] for e in examples) and not skip.skipped
    for e in examples:
        g = got[e["id"]]
        for key in ("video", "reference", "garment"):
            np.testing.assert_array_equal(g[key], e[key])
            assert g[key].dtype == np.uint8
        for key in ("static_caption", "dynamic_caption", "garment_type", "source"):
            assert str(g[key]) == e[key]
    assert "tensorflow" not in sys.modules


def test_latent_pipeline_deterministic_per_host_and_resumable(latents):
    first = _ids(_pipe(latents)[0], 12)  # two epochs of 6 batches
    assert first == _ids(_pipe(latents)[0], 12)
    assert first != _ids(_pipe(latents, seed=8)[0], 12)
    epoch1, epoch2 = sum(first[:6], []), sum(first[6:], [])
    assert sorted(epoch1) == sorted(epoch2) and len(set(epoch1)) == 24 and epoch1 != epoch2  # reshuffled

    hosts = [sum(_ids(_pipe(latents, batch_size=2, process_index=p, process_count=2)[0], 6), []) for p in (0, 1)]
    assert not set(hosts[0]) & set(hosts[1]) and len(set(hosts[0]) | set(hosts[1])) == 24

    dataset = _pipe(latents)[0]
    it = iter(dataset)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    resumed = iter(dataset)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_caption_mixing_and_text_dropout(latents):
    source = pipeline.RecordSource(latents, "train")
    by_id = {source[i]["id"]: source[i] for i in range(len(source))}
    empty = np.zeros((16, 32), np.float32)
    empty[:1] = pipeline.load_empty_prompt(latents)

    def contexts(**probs):
        batch = next(iter(_pipe(latents, batch_size=24, shuffle=False, **probs)[0]))
        return [(by_id[str(i)], c) for i, c in zip(batch["id"], batch["context"])]

    def padded(x):
        out = np.zeros((16, 32), np.float32)
        out[: len(x)] = x
        return out

    for record, context in contexts(dynamic_caption_prob=1.0, text_drop_prob=0.0):
        np.testing.assert_array_equal(context, padded(record["dynamic_embedding"]))
    for record, context in contexts(dynamic_caption_prob=0.0, text_drop_prob=0.0):
        np.testing.assert_array_equal(context, padded(record["full_embedding"]))
    for record, context in contexts(dynamic_caption_prob=0.5, text_drop_prob=1.0):
        np.testing.assert_array_equal(context, empty)
    kinds = []
    for seed in range(5):
        for record, context in contexts(dynamic_caption_prob=0.7, text_drop_prob=0.1, seed=seed):
            kinds.append("empty" if np.array_equal(context, empty) else
                         "dynamic" if np.array_equal(context, padded(record["dynamic_embedding"])) else "full")
    counts = {k: kinds.count(k) for k in ("dynamic", "full", "empty")}
    assert len(kinds) == 120 and 50 <= counts["dynamic"] <= 100 and 15 <= counts["full"] <= 50 and 3 <= counts["empty"] <= 25, counts


def _corrupt_record(builder, index: int) -> None:
    """Overwrite record `index` of the (single-shard) train split with bytes that are no serialized example."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    path = os.fspath(builder.info.splits["train"].filepaths[0])
    reader = ArrayRecordReader(path)
    records = [reader.read([i])[0] for i in range(reader.num_records())]
    reader.close()
    records[index] = b"\x00garbage, not a tf.train.Example\xff" * 3
    writer = ArrayRecordWriter(path, "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()


def test_corrupt_record_is_skipped_or_raised_by_name(tmp_path, caplog):
    builder = _latent_dataset(tmp_path, _latents(8))
    _corrupt_record(builder, 3)
    name = triplets.record_name(builder, "train", 3)
    assert name.startswith("fashion_latents/train[3] (fashion_latents-train.array_record-00000-of-00001 record 3)")

    data, skip = _pipe(builder, batch_size=1, shuffle=False, num_epochs=1)
    with caplog.at_level(logging.WARNING, logger="fc_jax.data.pipeline"):
        ids = [str(b["id"][0]) for b in data]
    assert len(ids) == 7 and skip.skipped == [name]
    assert any(name in r.getMessage() and "does not decode" in r.getMessage() for r in caplog.records)

    data, _ = _pipe(builder, batch_size=1, shuffle=False, num_epochs=1, on_bad_record="raise")
    with pytest.raises(pipeline.BadRecordError, match=r"fashion_latents/train\[3\]"):
        list(data)


def test_misshaped_record_is_named_by_id(tmp_path):
    examples = list(_latents(6))
    examples[2]["video_latents"] = examples[2]["video_latents"][:2]
    examples[2]["id"] = "too-short"
    builder = _latent_dataset(tmp_path, iter(examples))
    data, skip = _pipe(builder, batch_size=1, shuffle=False, num_epochs=1, on_bad_record="raise")
    with pytest.raises(pipeline.BadRecordError,
                       match=r"id='too-short'.*video_latents has shape \(2, 4, 2, 48\), expected \(3, 4, 2, 48\)"):
        list(data)
    data, skip = _pipe(builder, batch_size=1, shuffle=False, num_epochs=1)
    assert len(list(data)) == 5 and len(skip.skipped) == 1 and "too-short" in skip.skipped[0]


def test_manifest_in_the_authors_layout(tmp_path):
    av = pytest.importorskip("av")
    from PIL import Image

    rng = np.random.default_rng(0)
    video = tmp_path / "clips" / "a.mp4"
    video.parent.mkdir()
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 48, 80, "yuv420p"
        for k in range(12):
            frame = np.full((80, 48, 3), 20 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    Image.fromarray(rng.integers(0, 255, (100, 40, 3), dtype=np.uint8)).save(tmp_path / "clips" / "a_src.png")
    Image.fromarray(np.zeros((30, 60, 3), np.uint8)).save(tmp_path / "clips" / "a_cloth.png")
    prompt = json.dumps({"en_long": ["turns around", "a black shirt"]})  # the authors' order: dynamic, static
    manifest = tmp_path / "meta.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("video", "prompt", "garment_type"), ("clips/a.mp4", prompt, "upper"),
                                 ("clips/missing.mp4", prompt, "lower")])
    errors = []
    examples = list(triplets.examples_from_manifest(str(manifest), height=64, width=32, num_frames=9,
                                                    on_error=lambda where, e: errors.append(where)))
    assert len(examples) == 1 and errors == [f"{manifest} row 3"]
    e = examples[0]
    assert e["video"].shape == (9, 64, 32, 3) and e["reference"].shape == (64, 32, 3) and e["garment"].shape == (64, 32, 3)
    assert (e["static_caption"], e["dynamic_caption"], e["garment_type"]) == ("a black shirt", "turns around", "upper")
    assert abs(int(e["video"][8].mean()) - 160) <= 6 and int(e["video"][0].mean()) <= 6  # frames in order
    # The 60x30 black garment fits a 32-wide canvas as 32x16, centred on white: white above and below.
    assert (e["garment"][:20] == 255).all() and (e["garment"][-20:] == 255).all() and e["garment"][32].max() == 0
    builder = triplets.write_dataset("triplets", str(tmp_path / "ds"), {"train": iter(examples)})
    assert builder.info.splits["train"].num_examples == 1


def test_preencode_resumes_and_matches_a_direct_encode(tmp_path, capsys):
    import jax

    from fc_jax.data import preencode
    from fc_jax.models import vae

    config = runpy.run_path(os.path.join(REPO, "configs", "sft_teacher.py"))["get_config"]("tiny")
    examples = list(synthetic.synthetic_triplets(5, num_frames=9, height=64, width=32, seed=3))
    src = triplets.write_dataset("triplets", str(tmp_path / "triplets"), {"train": iter(examples)})
    vae_params, text = preencode.load_encoders(config, None, None, None, True, 0, 1)
    encoder = preencode.BatchEncoder(vae_params, text, jax.local_devices())
    dst = str(tmp_path / "latents")

    preencode.encode_split(src, "train", dst, encoder, config, chunk=2, on_bad_record="skip")
    chunks = [preencode.chunk_path(dst, "train", c) for c in range(3)]
    assert all(os.path.exists(c) for c in chunks)
    os.remove(chunks[1])  # as if the job had died while encoding chunk 1
    kept = os.stat(chunks[0]).st_mtime_ns
    assert preencode.preencode(config, str(tmp_path / "triplets"), dst, encoder, chunk=2) == []
    assert "2 of 3 chunks already encoded; resuming" in capsys.readouterr().err
    assert os.stat(chunks[0]).st_mtime_ns == kept

    out = triplets.open_builder("latents", dst)
    records = {r["id"]: r for r in (pipeline.RecordSource(out, "train")[i] for i in range(5))}
    assert sorted(records) == sorted(e["id"] for e in examples)
    e = examples[4]
    r = records[e["id"]]
    pixels = lambda x: encoder.pixels(x[None])
    np.testing.assert_allclose(r["video_latents"], np.asarray(vae.encode_video(vae_params, pixels(e["video"])))[0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["garment_latent"], np.asarray(vae.encode_image(vae_params, pixels(e["garment"])))[0],
                               rtol=1e-5, atol=1e-5)
    assert r["video_latents"].shape == (3, 4, 2, 48) and r["reference_latent"].shape == (1, 4, 2, 48)
    dynamic, n = text([e["dynamic_caption"]])
    np.testing.assert_allclose(r["dynamic_embedding"], dynamic[0, : n[0]], rtol=1e-6)
    full, n = text([e["dynamic_caption"] + " " + e["static_caption"]])
    np.testing.assert_allclose(r["full_embedding"], full[0, : n[0]], rtol=1e-6)
    empty = pipeline.load_empty_prompt(out)
    assert empty.shape == (1, 32)  # the EOS token alone
