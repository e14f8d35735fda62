"""The streaming session: chunk accounting, switching, compile-once behaviour, streams past the RoPE table,
errors; images and mp4 I/O."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fc_jax import images
from fc_jax.bench.common import CompileCounter
from fc_jax.config import load_config
from fc_jax.models import light_decoder, vae
from fc_jax.sampling.frames import chunk_count, chunk_start, switch_chunks
from fc_jax.sampling.streaming import StreamingSession


LIGHT = ml_collections.ConfigDict(dict(light_decoder=dict(width=8, blocks=1, up_widths=(8, 8, 8), dtype="float32")))


@pytest.fixture(scope="module")
def parts(tiny_dit):
    _, _, dit_params = tiny_dit
    config = load_config("tiny")
    config.vae.update(dict(encoder_res_blocks=1, decoder_res_blocks=1))  # smaller VAE: quicker compiles
    vae_params = vae.init_params(config, jax.random.key(2))
    context = jax.random.normal(jax.random.key(3), (1, config.model.text_len, config.model.text_dim))
    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 256, (50 + 10 * i, 40, 3), dtype=np.uint8) for i in range(4)]
    return config, dit_params, vae_params, context, pics


def _session(parts, **kw):
    config, dit_params, vae_params, context, pics = parts
    s = StreamingSession(config, dit_params, vae_params, context, seed=3, **kw)
    s.start(pics[0], pics[1])
    return s


def test_chunk_accounting_and_frame_counts():
    assert chunk_count(81) == 7 and chunk_count(9) == 1
    assert [chunk_start(c) for c in range(4)] == [0, 9, 21, 33]
    assert chunk_count(12 * 10**11 - 3) == 10**11  # any length: nothing the size of the video is built
    for bad, nearest in ((80, "69 and 81"), (17, "9 and 21"), (20, "9 and 21"), (0, "9"), (10**12, "999999999993")):
        with pytest.raises(ValueError, match=f"must be 12k - 3 .*got {bad}; the nearest are {nearest}"):
            chunk_count(bad)


def test_switch_frames_map_to_the_next_chunk_boundary():
    # chunk starts for 45 frames: 0, 9, 21, 33
    assert switch_chunks({9: "a"}, 45) == {1: "a"}
    assert switch_chunks({10: "a", 30: "b"}, 45) == {2: "a", 3: "b"}
    with pytest.raises(ValueError, match="outside the video"):
        switch_chunks({45: "a"}, 45)
    with pytest.raises(ValueError, match="falls in the last chunk"):
        switch_chunks({40: "a"}, 45)
    with pytest.raises(ValueError, match="same chunk"):
        switch_chunks({10: "a", 12: "b"}, 45)


def test_each_committed_chunk_draws_its_own_noise(parts):
    # the second chunk's noise is the same whether the first was decoded (next_chunk) or not (next_latents)
    decoded_first = _session(parts)
    decoded_first.next_chunk()
    latents_only = _session(parts)
    first = latents_only.next_latents()
    second = latents_only.next_latents()
    np.testing.assert_allclose(second, decoded_first.next_latents(), atol=1e-5)
    assert not np.allclose(first, second, atol=1e-3)


def test_starting_from_encoded_conditions_is_starting_from_the_images(parts):
    config, dit_params, vae_params, context, pics = parts
    from_images = _session(parts)
    s = StreamingSession(config, dit_params, vae_params, context, seed=3)
    h, w = config.video.height, config.video.width
    ref = vae.encode_image(vae_params, jnp.asarray(images.reference_image(pics[0], h, w))[None])
    s.start_from_latents(ref, s.garment_latent(pics[1]))
    np.testing.assert_allclose(s.next_chunk(), from_images.next_chunk(), atol=1)
    other = s.garment_latent(pics[2])  # a different garment changes the stream: the latents are used
    s.start_from_latents(ref, other)
    assert not np.allclose(s.next_latents(), _session(parts).next_latents(), atol=1e-3)
    with pytest.raises(ValueError, match=r"garment_latent must be \[1, 1, h, w, C\] = .*found \(1, 2,"):
        s.start_from_latents(ref, jnp.concatenate([other, other], axis=1))


@pytest.mark.parametrize("decoder", ["vae", "light"])
def test_streamed_frames_equal_decoding_the_committed_latents_whole(parts, decoder):
    light = light_decoder.init_params(LIGHT, jax.random.key(5)) if decoder == "light" else None
    s = _session(parts, decoder=decoder, light_decoder_params=light)
    frames, latents = [], []
    for _ in range(3):
        latents.append(s.next_latents())
        frames.append(s.decode_next(latents[-1]))
    assert [f.shape[1] for f in frames] == [9, 12, 12]  # latent frame 0 decodes to exactly one frame
    joined = jnp.concatenate(latents, axis=1)
    whole = light_decoder.decode(light, joined) if decoder == "light" else vae.decode(s.vae_params, joined)
    np.testing.assert_allclose(np.concatenate(frames, axis=1), whole, atol=1e-5)
    other = vae.decode(s.vae_params, joined) if decoder == "light" else None
    assert other is None or not np.allclose(whole, other, atol=1e-2)  # the chosen decoder made the frames


def test_stream_with_latents_yields_each_chunk_with_the_latents_it_decoded(parts):
    """`stream(with_latents=True)` (what the light decoder's sampler latents are made with) yields the same frames
    as a plain stream, each chunk beside the latents that decode to it."""
    from fc_jax.images import to_uint8

    pairs = list(_session(parts).stream(21, progress=False, with_latents=True))
    plain = list(_session(parts).stream(21, progress=False))
    assert [f.shape[0] for f, _ in pairs] == [9, 12] and [z.shape[1] for _, z in pairs] == [3, 3]
    for (frames, _), expected in zip(pairs, plain):
        np.testing.assert_array_equal(frames, expected)
    whole = to_uint8(vae.decode(parts[2], jnp.concatenate([z for _, z in pairs], axis=1))[0])
    assert np.abs(np.concatenate(plain).astype(int) - np.asarray(whole).astype(int)).max() <= 1


def test_decoder_choice_is_checked(parts):
    config, dit_params, vae_params, context, _ = parts
    with pytest.raises(ValueError, match=r"decoder 'taesd': expected one of \('vae', 'light'\)"):
        StreamingSession(config, dit_params, vae_params, context, decoder="taesd")
    with pytest.raises(ValueError, match="decoder='light' with light_decoder_params missing"):
        StreamingSession(config, dit_params, vae_params, context, decoder="light")


def test_a_long_stream_with_switches_compiles_nothing_after_warmup(parts):
    _, _, _, _, pics = parts
    s = _session(parts)
    s.next_chunk()
    s.next_chunk()  # later chunks decode with a different (non-first) VAE shape
    s.switch_garment(pics[2])
    s.next_chunk()
    with CompileCounter() as counter:
        for c in range(27):
            if c in (8, 16, 24):
                s.switch_garment(pics[(c // 8) % 4])
            frames = s.next_chunk()
    assert counter.count == 0, f"compiled after warm-up: {counter.names}"
    assert frames.shape == (12, 64, 32, 3) and frames.dtype == np.uint8
    assert s.chunks_made == 30
    assert int(s._cache.next_frame) == 2 + 3 * 30  # positions keep growing without rebase


def test_a_stream_runs_past_the_rope_table_without_recompiling(parts):
    """With a 16-frame RoPE table the cache is moved back every 4 chunks; the stream runs 18 chunks (56 latent
    frames) compiling nothing after warm-up, and its latents equal those of the same stream with the default
    1024-frame table (which never shifts), up to fp32 rounding."""
    config, dit_params, vae_params, context, pics = parts
    small = config.copy_and_resolve_references()
    small.model.rope_max_positions = 16
    short = StreamingSession(small, dit_params, vae_params, context, seed=3)
    long = StreamingSession(config, dit_params, vae_params, context, seed=3)
    for s in (short, long):
        s.start(pics[0], pics[1])
    for _ in range(6):  # warm-up, one shift included
        np.testing.assert_allclose(short.next_latents(), long.next_latents(), rtol=0, atol=1e-4)
    assert short.position_shifts == 1 and long.position_shifts == 0
    with CompileCounter() as counter:
        for _ in range(12):
            latents = short.next_latents()
    assert counter.count == 0, f"compiled after warm-up: {counter.names}"
    # Chunks 1-4 at frames 2, 5, 8, 11; a shift before chunks 5, 9, 13 and 17; chunks 17, 18 at 2, 5.
    assert short.position_shifts == 4 and int(short._cache.next_frame) == 8
    assert np.isfinite(np.asarray(latents)).all()  # 18 chunks: 54 latent frames through a table of 16

    # The default table's limit goes through the same code path: a chunk that would reach frame 1024 shifts.
    long._cache = long._cache.replace(next_frame=jnp.int32(1022))
    long.next_latents()
    assert long.position_shifts == 1 and int(long._cache.next_frame) == 2 + 3


def test_bad_input_is_named_and_a_failed_switch_leaves_the_session_usable(parts, tmp_path):
    config, dit_params, vae_params, context, pics = parts
    fresh = StreamingSession(config, dit_params, vae_params, context)
    with pytest.raises(RuntimeError, match="before start"):
        fresh.switch_garment(pics[1])
    with pytest.raises(RuntimeError, match="before start"):
        fresh.next_chunk()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    a, b = _session(parts), _session(parts)
    a.next_chunk(), b.next_chunk()
    with pytest.raises(ValueError, match="cannot read image"):
        a.switch_garment(str(broken))
    with pytest.raises(FileNotFoundError, match="image not found"):
        a.switch_garment(str(tmp_path / "missing.png"))
    np.testing.assert_array_equal(a.next_chunk(), b.next_chunk())  # as if the failed switches never happened

    with pytest.raises(ValueError, match="outside the video"):
        next(a.stream(21, {30: pics[2]}))


def test_switch_ablations_change_what_they_should(parts):
    _, _, _, _, pics = parts
    base = _session(parts)
    base.next_chunk()
    full = _session(parts)
    full.next_chunk()
    full.switch_garment(pics[2])
    no_withdraw = _session(parts)
    no_withdraw.next_chunk()
    no_withdraw.switch_garment(pics[2], withdraw=False)
    assert int(full._cache.num_chunks) == 0 and int(no_withdraw._cache.num_chunks) == 1
    c = base.spec.cond_tokens
    np.testing.assert_array_equal(np.asarray(no_withdraw._cache.k[:, :, c:]), np.asarray(base._cache.k[:, :, c:]))
    assert not np.allclose(np.asarray(full._cache.garment), np.asarray(base._cache.garment))
    assert not np.allclose(np.asarray(full._cache.reference), np.asarray(base._cache.reference))  # disentangled


def test_uint8_on_the_device_is_the_host_conversion():
    """The session's device-side uint8 conversion rounds and clips exactly as `images.to_uint8`, ties included
    (x.5 values round half to even in both)."""
    ties = (np.arange(-2.0, 257.0, 0.5) / 127.5 - 1.0).astype(np.float32)
    noise = np.random.default_rng(0).uniform(-1.2, 1.2, 5000).astype(np.float32)
    for x in (ties, noise):
        np.testing.assert_array_equal(np.asarray(images.to_uint8_on_device(jnp.asarray(x))), images.to_uint8(x))


def test_image_preprocessing_matches_the_authors_rules():
    wide = np.zeros((20, 80, 3), np.uint8)
    wide[:, 30:50] = 255  # a white stripe in the middle
    ref = images.reference_image(wide, 40, 20)  # cover: scale 2 -> 40 x 160, centre crop 20 wide
    assert ref.shape == (40, 20, 3) and ref.min() >= -1 and ref.max() <= 1
    assert ref[:, 8:12].mean() > 0.9  # the stripe stays centred
    garment = images.garment_image(np.zeros((10, 40, 3), np.uint8), 40, 20)  # fit: 20 wide x 5 tall, padded
    assert np.all(garment[:15] == 1.0) and np.all(garment[-15:] == 1.0)  # white above and below
    assert garment[20, 10].max() == -1.0  # the black garment in the middle


def test_mp4_roundtrip(tmp_path):
    from fc_jax.video import Mp4Writer, read_video

    frames = np.zeros((9, 32, 48, 3), np.uint8)
    frames[:, 8:24, 8:24] = [200, 40, 40]
    path = str(tmp_path / "v.mp4")
    with Mp4Writer(path, fps=24) as w:
        w.write(frames[:4])
        w.write(frames[4:])
    back = read_video(path).frames
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 6
    with pytest.raises(ValueError, match="uint8 frames"):
        Mp4Writer(str(tmp_path / "w.mp4")).write(frames.astype(np.float32))

    # A failure mid-video: with keep_partial the frames so far are a finished, playable mp4 named as partial.
    kept = str(tmp_path / "k.mp4")
    with pytest.raises(KeyboardInterrupt):
        with Mp4Writer(kept, keep_partial=True) as w:
            w.write(frames[:4])
            raise KeyboardInterrupt
    assert w.kept == str(tmp_path / "k.partial.mp4") and sorted(os.listdir(tmp_path)) == ["k.partial.mp4", "v.mp4"]
    assert read_video(w.kept).num_frames == 4
    with pytest.raises(RuntimeError):
        with Mp4Writer(str(tmp_path / "gone.mp4")) as w:  # without keep_partial nothing is left
            w.write(frames[:4])
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["k.partial.mp4", "v.mp4"]


def test_probes_are_logged_per_chunk_and_change_no_frame(parts):
    _, _, _, _, pics = parts
    plain, probed = _session(parts), _session(parts, probe=True)
    made = []
    for c in range(3):
        if c == 2:
            plain.switch_garment(pics[2]), probed.switch_garment(pics[2])
        made.append((plain.next_chunk(), probed.next_chunk()))
    for a, b in made:
        np.testing.assert_allclose(a.astype(int), b.astype(int), atol=1)  # the probe only reads the cache
    assert plain.probe_log == []
    log = probed.probe_log
    assert [e["chunk"] for e in log] == [0, 1, 2] and [e["after_switch"] for e in log] == [False, False, True]
    assert [e["first_frame"] for e in log] == [chunk_start(c) for c in range(3)]
    for entry in log:
        total = sum(np.asarray(m) for m in entry["mass"].values())
        np.testing.assert_allclose(total, 1.0, atol=1e-5)  # per layer, over every region
    # chunk 0 has no history; chunk 1 attends to chunk 0 (the sink chunk); the full switch withdrew it
    past = lambda entry: [np.asarray(m) for k, m in entry["mass"].items() if k == "sink" or k.startswith("history")]
    assert all(np.all(m == 0) for m in past(log[0]) + past(log[2]))
    assert np.all(np.asarray(log[1]["mass"]["sink"]) > 0)


def test_a_plug_in_edit_replaces_the_built_in_switch(parts):
    from fc_jax import kv_edits

    _, _, _, _, pics = parts
    s = _session(parts)
    s.next_chunk(), s.next_chunk()
    history = np.asarray(s._cache.k[:, :, s.spec.cond_tokens:])
    s.switch_garment(pics[2], edit=kv_edits.reference_only_refresh)
    assert int(s._cache.num_chunks) == 2  # the history is kept
    np.testing.assert_array_equal(np.asarray(s._cache.k[:, :, s.spec.cond_tokens:]), history)
    full = _session(parts)
    full.next_chunk(), full.next_chunk()
    full.switch_garment(pics[2])
    assert not np.allclose(np.asarray(s._cache.garment), np.asarray(full._cache.garment))  # the old garment stays
    assert not np.allclose(np.asarray(s._cache.reference), np.asarray(_session(parts)._cache.reference))
    s.apply_edit(kv_edits.selective_withdraw, slot_mass=jnp.zeros(s.spec.history_chunks).at[0].set(0.5),
                  threshold=0.2)
    assert int(s._cache.num_chunks) == 1 and s.next_chunk().shape[0] == 12
    with pytest.raises(ValueError, match="an edit replaces the built-in switch"):
        s.switch_garment(pics[1], edit=kv_edits.reference_only_refresh, withdraw=False)
