"""The light streaming decoder: streaming equals the whole sequence, two compiles, the VAE's frame rule, named
errors for bad latents and states."""

import json

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fc_jax.models import light_decoder as ld

CFG = ml_collections.ConfigDict(dict(light_decoder=dict(width=16, blocks=2, up_widths=(12, 8, 8), dtype="float32")))
B, H, W = 2, 2, 3


@pytest.fixture(scope="module")
def params():
    p = ld.init_params(CFG, jax.random.key(0))
    # Random biases too (zeros at init would hide a wrong memory or frame order in the first chunk).
    leaves, treedef = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_depth_to_space_matches_einops():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 2 * 2 * 3))
    expected = einops.rearrange(np.asarray(x), "b t h w (ph pw c) -> b t (h ph) (w pw) c", ph=2, pw=2)
    np.testing.assert_array_equal(np.asarray(ld.depth_to_space(x, 2)), expected)


def test_frame_rule_and_range(params):
    z = jax.random.normal(jax.random.key(2), (B, 3, H, W, 48))
    frames = ld.decode(params, z)
    assert frames.shape == (B, 1 + 4 * 2, 16 * H, 16 * W, 3)
    assert float(jnp.max(jnp.abs(frames))) <= 1.0


def test_streaming_equals_whole_with_two_compiles(params):
    """Chunks of 1, 2, 2 and 1 latent frames decode to the frames of the whole 6-frame sequence, and the
    later chunks of any length of one compile ... per length: first (1) and later (2) here, plus the later 1."""
    z = jax.random.normal(jax.random.key(3), (B, 6, H, W, 48))
    whole = np.asarray(ld.decode(params, z))
    before = ld._decode_chunk_jit._cache_size()
    state = ld.init_state(params, B, H, W)
    parts = []
    for a, b in [(0, 1), (1, 3), (3, 5)]:
        frames, state = ld.decode_chunk(params, state, z[:, a:b])
        parts.append(np.asarray(frames))
    assert ld._decode_chunk_jit._cache_size() - before == 2  # the first chunk, and every later 2-frame chunk
    frames, state = ld.decode_chunk(params, state, z[:, 5:])
    parts.append(np.asarray(frames))
    assert [p.shape[1] for p in parts] == [1, 8, 8, 4]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)


def test_the_memory_carries_the_past(params):
    """A later chunk's frames depend on the chunk before it (the memory is used, not zeros)."""
    z = jax.random.normal(jax.random.key(4), (B, 3, H, W, 48))
    other = z.at[:, 1].set(-z[:, 1])
    a, b = np.asarray(ld.decode(params, z)), np.asarray(ld.decode(params, other))
    assert np.abs(a[:, 9 - 4 :] - b[:, 9 - 4 :]).max() > 1e-3  # the last latent frame's 4 frames differ


def test_bad_latents_and_states_are_named(params):
    state = ld.init_state(params, B, H, W)
    with pytest.raises(ValueError, match=r"expected latents \[B, f, h, w, 48\], found shape \(2, 1, 2, 3, 16\)"):
        ld.decode_chunk(params, state, jnp.zeros((B, 1, H, W, 16)))
    with pytest.raises(ValueError, match=r"expected latents .* found shape \(2, 2, 3, 48\)"):
        ld.decode(params, jnp.zeros((B, H, W, 48)))
    with pytest.raises(ValueError, match=r"at least one latent frame"):
        ld.decode(params, jnp.zeros((B, 0, H, W, 48)))
    with pytest.raises(ValueError, match=r"state was made for \(batch, h, w\) = \(2, 2, 3\)"):
        ld.decode_chunk(params, state, jnp.zeros((B, 1, H + 1, W, 48)))
    bad = ml_collections.ConfigDict(dict(light_decoder=dict(width=8, blocks=0, up_widths=(8, 8, 8), dtype="float32")))
    with pytest.raises(ValueError, match="at least 1 memory block"):
        ld.init_params(bad, jax.random.key(0))


def test_sampler_latents_replace_the_chosen_clips_and_leave_their_real_term():
    """`sampler_share` picks evenly spread clips; their windows come from the training pool only (never the
    held-out streams), are fixed by the batch's pixels, the teacher decodes exactly them, and the loss's real
    term ignores those clips' videos."""
    from fc_jax.config import load_config
    from fc_jax.models import vae
    from fc_jax.training.stages.light_decoder import (distill_loss, sampler_mask, sampler_windows,
                                                       teacher_targets)

    np.testing.assert_array_equal(sampler_mask(4, 0.5), [0, 1, 0, 1])
    np.testing.assert_array_equal(sampler_mask(3, 0.0), [0, 0, 0])
    np.testing.assert_array_equal(sampler_mask(2, 1.0), [1, 1])
    with pytest.raises(ValueError, match=r"sampler_share must be in \[0, 1\], got 1.5"):
        sampler_mask(2, 1.5)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (4, 9, 32, 48, 3), dtype=np.uint8)
    # stream n of the pool holds the value n everywhere: a window tells which stream it came from
    pool = np.broadcast_to(np.arange(5, dtype=np.float16)[:, None, None, None, None], (5, 4, 6, 5, 48)).copy()
    pool[:, 3] = -1.0  # latent frames past the clip's 3 are never taken
    mask = sampler_mask(4, 0.5)
    windows = sampler_windows(pool, video, mask, pool=3)
    assert windows.shape == (4, 3, 2, 3, 48)
    assert not windows[mask == 0].any() and all(len(np.unique(windows[i])) == 1 for i in (1, 3))
    assert {float(windows[i, 0, 0, 0, 0]) for i in (1, 3)} <= {0.0, 1.0, 2.0}  # streams 3, 4 are held out
    np.testing.assert_array_equal(sampler_windows(pool, video, mask, pool=3), windows)
    drawn = {float(sampler_windows(pool, video + k, mask, pool=3)[1, 0, 0, 0, 0]) for k in range(1, 12)}
    assert len(drawn) > 1  # other pixels, other draws

    config = load_config("tinyworld_light_decoder:smoke")
    teacher = vae.init_params(config, jax.random.key(0))
    windows = rng.normal(size=windows.shape).astype(np.float32)
    z, frames = teacher_targets(teacher, jnp.asarray(video), 0.0, jnp.asarray(windows), jnp.asarray(mask))
    clean_z, clean_frames = teacher_targets(teacher, jnp.asarray(video))
    np.testing.assert_allclose(z[mask == 1], windows[mask == 1], atol=1e-6)
    np.testing.assert_array_equal(z[mask == 0], clean_z[mask == 0])
    np.testing.assert_allclose(frames[mask == 1], jnp.clip(vae.decode_raw(
        teacher, vae.denormalize_latents(jnp.asarray(windows[mask == 1])), one_pass=True), -1, 1), atol=1e-5)
    np.testing.assert_allclose(frames[mask == 0], clean_frames[mask == 0], atol=1e-5)

    params = ld.init_params(config, jax.random.key(1))
    batch = {"latents": z, "teacher": frames, "video": jnp.asarray(video), "real": jnp.asarray(1.0 - mask)}
    loss = distill_loss(params, batch, 0.1, 1.0)
    other = video.copy()
    other[mask == 1] = 255 - other[mask == 1]
    assert float(distill_loss(params, {**batch, "video": jnp.asarray(other)}, 0.1, 1.0)) == pytest.approx(float(loss))
    other[0] = 255 - other[0]
    assert float(distill_loss(params, {**batch, "video": jnp.asarray(other)}, 0.1, 1.0)) != pytest.approx(float(loss))


def test_rare_colour_weights_tilt_the_loss_towards_the_teachers_rare_colours():
    """With `rare_colour_weight` the distillation loss weighs the pixels whose colour is rare in the teacher's
    frames: an error on a small red square costs 11 / mean(w) times the plain mean's, an error of the same size on
    the grey background 1 / mean(w) times; at weight 0 the loss is the plain mean."""
    from fc_jax.config import load_config
    from fc_jax.training.stages.light_decoder import distill_loss, pixel_loss, teacher_colour_weights

    teacher = np.full((1, 5, 16, 16, 3), -0.2, np.float32)  # grey
    teacher[:, :, 2:5, 2:5] = (0.9, -0.9, -0.9)  # a red square: 9 of 256 pixels
    weights = np.asarray(teacher_colour_weights(jnp.asarray(teacher), 10.0, 0.05))
    assert weights.shape == (1, 5, 16, 16)
    assert (weights[:, :, 2:5, 2:5] == 11.0).all() and (weights.sum() - 11.0 * 45) == 1.0 * (5 * 256 - 45)
    assert teacher_colour_weights(jnp.asarray(teacher), 0.0, 0.05) is None
    on_square, on_grey = teacher.copy(), teacher.copy()
    on_square[:, :, 2:5, 2:5] += 0.3
    on_grey[:, :, 10:13, 10:13] += 0.3
    loss = lambda pred, w: float(pixel_loss(jnp.asarray(pred), jnp.asarray(teacher), 1.0, w)[0])
    w = jnp.asarray(weights)
    mean_weight = (45 * 11.0 + (5 * 256 - 45)) / (5 * 256)  # the weighted mean divides by it
    assert loss(on_square, w) == pytest.approx(loss(on_square, None) * 11.0 / mean_weight, rel=1e-5)
    assert loss(on_grey, w) == pytest.approx(loss(on_grey, None) / mean_weight, rel=1e-5)
    assert loss(on_square, None) == pytest.approx(loss(on_grey, None))

    params = ld.init_params(load_config("tinyworld_light_decoder:smoke"), jax.random.key(1))
    rng = np.random.default_rng(0)
    batch = {"latents": jnp.asarray(rng.normal(size=(2, 3, 2, 3, 48)), jnp.float32),
             "teacher": jnp.asarray(np.pad(teacher, ((1, 0), (2, 2), (8, 8), (16, 16), (0, 0)),
                                           constant_values=-0.2)),
             "video": jnp.asarray(rng.integers(0, 256, (2, 9, 32, 48, 3)), jnp.uint8), "real": jnp.ones(2)}
    plain = float(distill_loss(params, batch, 0.1, 1.0))
    assert float(distill_loss(params, batch, 0.1, 1.0, 0.0, 0.05)) == plain
    assert float(distill_loss(params, batch, 0.1, 1.0, 10.0, 0.05)) != pytest.approx(plain)


def test_stage_distils_through_the_driver(tmp_path):
    """The `light_decoder` stage at smoke size: tiny-world clips, a VAE teacher from a parameter folder, four
    steps through the one driver, its PSNRs against the teacher and the truth evaluated, an exportable decoder;
    a missing teacher is named before any data is read."""
    from fc_jax.config import load_config
    from fc_jax.convert.common import save_params
    from fc_jax.models import vae
    from fc_jax.tinyworld.dataset import write_tinyworld
    from fc_jax.training.driver import train
    from fc_jax.training.export import read_parameters

    config = load_config("tinyworld_light_decoder:smoke")
    v = config.video
    write_tinyworld(str(tmp_path / "data"), {"train": 8, "eval": 4}, height=v.height, width=v.width,
                    num_frames=v.num_frames)
    save_params(vae.init_params(config, jax.random.key(0)), str(tmp_path / "vae"))
    config.data.data_dir = str(tmp_path / "data")
    config.light_decoder_train.teacher = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="light_decoder_train.teacher .*missing.* expected a VAE parameter folder"):
        train(config, str(tmp_path / "bad_run"))
    config.light_decoder_train.teacher = str(tmp_path / "vae")
    summary = train(config, str(tmp_path / "run"))
    assert summary["step"] == 4 and np.isfinite(summary["last_metrics"]["loss"])
    evals = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
    assert [e["step"] for e in evals] == [0, 2, 4]
    assert all(np.isfinite(e["eval/psnr_vs_full_db"]) and np.isfinite(e["eval/psnr_db"]) for e in evals)
    assert all("eval/psnr_vs_full_sampler_db" not in e for e in evals)
    params = read_parameters(str(tmp_path / "run" / "checkpoints"), 4, "ema_params")
    frames = ld.decode(params, jnp.zeros((1, 2, 4, 4, 48)))
    assert frames.shape == (1, 5, 64, 64, 3)

    # Half of each batch from a sampler's latents (3 streams, the last held out for its own PSNR).
    config.light_decoder_train.update(dict(sampler_share=0.5, sampler_eval_streams=1,
                                           sampler_latents=str(tmp_path / "missing.npy")))
    with pytest.raises(FileNotFoundError, match="sampler_latents .*missing.npy.*: no such file"):
        train(config, str(tmp_path / "bad_run"))
    np.save(tmp_path / "small.npy", np.zeros((3, 3, 1, 1, 48), np.float16))
    config.light_decoder_train.sampler_latents = str(tmp_path / "small.npy")
    with pytest.raises(ValueError, match=r"expected \[N, >= 3, >= 2, >= 3, 48\]; found \(3, 3, 1, 1, 48\)"):
        train(config, str(tmp_path / "bad_run"))
    sampler = np.random.default_rng(0).normal(size=(3, 3, 4, 4, 48)).astype(np.float16)
    np.save(tmp_path / "sampler.npy", sampler)
    config.light_decoder_train.sampler_latents = str(tmp_path / "sampler.npy")
    summary = train(config, str(tmp_path / "run_sampler"))
    assert summary["step"] == 4 and np.isfinite(summary["last_metrics"]["loss"])
    evals = [json.loads(line) for line in open(tmp_path / "run_sampler" / "eval.jsonl")]
    assert [e["step"] for e in evals] == [0, 2, 4]
    assert all(np.isfinite(e["eval/psnr_vs_full_sampler_db"]) and np.isfinite(e["eval/psnr_vs_full_db"])
               for e in evals)


def test_latent_noise_perturbs_the_latents_and_the_teacher_decodes_the_perturbed_ones():
    """`light_decoder_train.latent_noise`: the training latents move off the encoder's means, the teacher's
    frames are the VAE's decode of exactly those latents (not of the clean ones), the draw is fixed by the clip,
    and zero noise gives the clean pair."""
    from fc_jax.config import load_config
    from fc_jax.models import vae
    from fc_jax.training.stages.light_decoder import teacher_targets

    config = load_config("tinyworld_light_decoder:smoke")
    teacher = vae.init_params(config, jax.random.key(0))
    video = np.random.default_rng(0).integers(0, 256, (2, 5, 32, 32, 3), dtype=np.uint8)
    clean_z, clean_frames = teacher_targets(teacher, jnp.asarray(video))
    mu, _ = vae.posterior_moments(teacher, jnp.asarray(video, jnp.float32) / 127.5 - 1.0, one_pass=True)
    np.testing.assert_allclose(clean_z, vae.normalize_latents(mu), atol=1e-5)
    z, frames = teacher_targets(teacher, jnp.asarray(video), latent_noise=0.5)
    assert float(jnp.abs(z - clean_z).mean()) > 0.01
    np.testing.assert_allclose(
        frames, jnp.clip(vae.decode_raw(teacher, vae.denormalize_latents(z), one_pass=True), -1, 1), atol=1e-5)
    assert float(jnp.abs(frames - clean_frames).max()) > 1e-4
    again, _ = teacher_targets(teacher, jnp.asarray(video), latent_noise=0.5)
    np.testing.assert_array_equal(again, z)
