"""The tiny world's model pieces: the VAE's one-pass training path equals its streaming path, random clip windows,
the caption tokenizer, the shipped-weights format, the TI2V input, sampler and base loss, and the
motion-direction metric's calibration."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.config import load_config


def test_vae_one_pass_equals_streaming():
    """`one_pass=True` (the VAE stage's fast gradient path) gives the values of the streaming chunked path:
    encode frame 0 then 4 at a time, decode one latent frame at a time (fp32, random weights)."""
    from fc_jax.models import vae

    config = load_config("tiny")
    params = vae.init_params(config, jax.random.key(0))
    video = jax.random.uniform(jax.random.key(1), (2, 9, 32, 32, 3), minval=-1.0, maxval=1.0)
    mu, logvar = vae.posterior_moments(params, video)
    mu1, logvar1 = vae.posterior_moments(params, video, one_pass=True)
    assert mu.shape == (2, 3, 2, 2, 48)
    np.testing.assert_allclose(mu1, mu, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logvar1, logvar, atol=1e-5, rtol=1e-5)
    frames = vae.decode_raw(params, mu)
    assert frames.shape == video.shape
    np.testing.assert_allclose(vae.decode_raw(params, mu, one_pass=True), frames, atol=1e-5, rtol=1e-5)


def test_start_logvar_sets_the_posterior_variance_and_keeps_mu():
    """`start_logvar` makes the encoder's log-variance the constant `logvar_init` on any input and leaves mu as the
    random init made it."""
    from fc_jax.models import vae
    from fc_jax.training.stages.vae import start_logvar

    config = load_config("tiny")
    params = vae.init_params(config, jax.random.key(0))
    started = start_logvar(params, -10.0)
    video = jax.random.uniform(jax.random.key(1), (1, 5, 32, 32, 3), minval=-1.0, maxval=1.0)
    mu, logvar = vae.posterior_moments(params, video, one_pass=True)
    mu1, logvar1 = vae.posterior_moments(started, video, one_pass=True)
    np.testing.assert_array_equal(mu1, mu)
    assert float(jnp.std(logvar)) > 0.1
    np.testing.assert_allclose(logvar1, -10.0, atol=1e-6)


def test_rare_colour_weights_pick_the_figure_and_weigh_the_loss():
    """Pixels of a colour under the share of their clip get 1 + weight, the rest 1, counted per clip; on a rendered
    tiny-world clip most of the figure is weighted and little of the rest; the weighted loss counts an error on the rare
    pixels more than the plain mean does, and weight 0 is the plain mean."""
    from fc_jax.models import vae
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import split_specs
    from fc_jax.training.stages.vae import rare_colour_weights, vae_loss

    clips = np.zeros((2, 1, 10, 10, 3), np.uint8)
    clips[0, :, :, :] = (200, 30, 30)
    clips[0, :, :2, :2] = (20, 220, 40)  # 4% of clip 0
    clips[1, :, :, :5] = (20, 220, 40)  # the same colour is half of clip 1
    weights = np.asarray(rare_colour_weights(jnp.asarray(clips), 10.0, 0.05))
    expected = np.ones((2, 1, 10, 10), np.float32)
    expected[0, :, :2, :2] = 11.0
    np.testing.assert_array_equal(weights, expected)
    for weight, share in ((-1.0, 0.05), (10.0, 0.0), (10.0, 1.5)):
        with pytest.raises(ValueError, match="share"):
            rare_colour_weights(jnp.asarray(clips), weight, share)

    sample = render_sample(next(iter(split_specs("train", 1))))
    weights = np.asarray(rare_colour_weights(jnp.asarray(sample.video[None, ::8]), 10.0, 0.05))[0]
    figure = sample.parts[::8] > 0
    assert (weights[figure] > 1).mean() > 0.5 and (weights[figure] > 1).mean() > 4 * (weights[~figure] > 1).mean()

    config = load_config("tiny")
    params = vae.init_params(config, jax.random.key(0))
    video = np.full((1, 5, 32, 32, 3), 128, np.uint8)
    video[:, :, 10:14, 10:14] = (250, 20, 20)
    key = jax.random.key(1)
    x = jnp.asarray(video, jnp.float32) / 127.5 - 1.0
    mu, logvar = vae.posterior_moments(params, x, one_pass=True)
    z = mu + jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0)) * jax.random.normal(key, mu.shape)
    error = np.asarray(vae.decode_raw(params, z, one_pass=True) - x)
    per_pixel = (np.abs(error) + error**2).mean(-1)
    rare = np.zeros(per_pixel.shape, bool)
    rare[:, :, 10:14, 10:14] = True
    w = 1.0 + 10.0 * rare
    loss = lambda weight: float(vae_loss(params, jnp.asarray(video), key, 0.0, 1.0, weight))
    np.testing.assert_allclose(loss(0.0), per_pixel.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(10.0), (w * per_pixel).sum() / w.sum(), rtol=1e-5)
    assert per_pixel[rare].mean() > per_pixel[~rare].mean() and loss(10.0) > loss(0.0)

def test_random_clip_windows_and_clip_size_errors():
    from fc_jax.data.sources import RandomClip, clip_size

    video = np.random.default_rng(0).integers(0, 256, (9, 64, 48, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        out = RandomClip(5, (32, 16)).random_map({"video": video, "id": "x"}, rng)["video"]
        assert out.shape == (5, 32, 16, 3)
        hits = [(t, y, x) for t in range(5) for y in range(33) for x in range(33)
                if np.array_equal(video[t : t + 5, y : y + 32, x : x + 16], out)]
        assert hits, "the clip is not a window of the video"
        seen.add(hits[0])
    assert len(seen) > 5  # windows are drawn, not fixed
    config = load_config("tinyworld_vae:smoke")
    assert clip_size(config, config.vae_train) == (32, 48)
    config.vae_train.crop = (40, 48)
    with pytest.raises(ValueError, match="multiples of 16"):
        clip_size(config, config.vae_train)
    config.vae_train.crop = None
    assert clip_size(config, config.vae_train) == (config.video.height, config.video.width)


def test_tokenizer_covers_every_caption(tmp_path):
    """Every word of every caption has its own id (no <unk>), lengths are words + EOS, different captions give
    different ids, a word outside the world is <unk>; read back through `fc_jax.text.load_tokenizer`."""
    from fc_jax.text import load_tokenizer
    from fc_jax.tinyworld import spec as S
    from fc_jax.tinyworld.text import UNK_TOKEN, caption_vocabulary, words, write_tokenizer

    tokenizer = load_tokenizer(write_tokenizer(str(tmp_path)), 80)
    vocab = caption_vocabulary()
    assert len(set(vocab)) == len(vocab) > 50
    captions = set()
    for seed in range(300):
        spec = S.sample_spec(seed)
        captions |= {S.dynamic_caption(spec), S.static_caption(spec), f"{S.dynamic_caption(spec)} "
                     f"{S.static_caption(spec)}"}
    rows = {}
    unk = 2
    for caption in sorted(captions):
        ids, lengths = tokenizer([caption])
        assert lengths[0] == len(words(caption)) + 1 and ids[0, lengths[0] - 1] == tokenizer.eos_id
        assert unk not in ids[0, : lengths[0]], caption
        rows.setdefault(tuple(ids[0]), caption)
    assert len(rows) == len(captions)
    ids, lengths = tokenizer(["the person dances"])
    assert ids[0, 2] == unk and lengths[0] == 4
    assert UNK_TOKEN == "<unk>"


def test_weights_round_trip_and_missing_part(tmp_path):
    from fc_jax.tinyworld import weights

    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3) / 7}, "b": np.ones(4, np.float32)}
    path = str(tmp_path / "x.safetensors")
    weights.save_tree(tree, path)
    back = weights.load_tree(path)
    np.testing.assert_array_equal(back["a"]["kernel"], tree["a"]["kernel"])
    np.testing.assert_array_equal(back["b"], tree["b"])
    weights.save_tree(tree, path, np.float16)
    np.testing.assert_allclose(weights.load_tree(path)["a"]["kernel"], tree["a"]["kernel"], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="recipe"):
        weights.load_part("vae", str(tmp_path))
    with pytest.raises(ValueError, match="unknown tiny-world part"):
        weights.part_path("dit")


def test_carry_over_skips_the_steps_and_ship_keeps_the_carried_parts(tmp_path):
    """Parts carried from a weights folder land at their recipe paths, their steps are skipped (nothing trained),
    and `ship` writes them back unchanged with their recipe entries, curves and evaluations; bad parts are named."""
    from safetensors.numpy import load_file

    from fc_jax.tinyworld import card, recipe, weights

    work, dst = str(tmp_path / "tw"), str(tmp_path / "weights")
    parts = ["vae", "base", "light_decoder", "teacher", "student"]
    entries = card.carry_over(work, weights.SHIPPED, parts)
    source = weights.card()
    assert sorted(entries) == ["base", "gr_dmd", "light_decoder", "sft", "vae"]
    assert all(entries[s] == {**source["recipe"][s], "carried_from": weights.SHIPPED} for s in entries)
    log = recipe.run_recipe(work, ("vae", "text", "base", "light_decoder", "sft", "gr_dmd"))
    assert sorted(log) == sorted([*entries, "text"]) and all(log[s] == entries[s] for s in entries)
    assert not any(os.path.exists(recipe.paths(work)[f"{s}_run"]) for s in entries)  # nothing trained
    card.write_weights(work, dst)
    for part in parts:
        shipped, written = load_file(weights.part_path(part)), load_file(weights.part_path(part, dst))
        assert sorted(written) == sorted(shipped)
        assert all(written[k].dtype == shipped[k].dtype and np.array_equal(written[k], shipped[k]) for k in shipped)
        with open(os.path.join(weights.SHIPPED, "curves", f"{part}.png"), "rb") as a, \
                open(os.path.join(dst, "curves", f"{part}.png"), "rb") as b:
            assert a.read() == b.read()
    shipped_card = weights.card(dst)
    assert shipped_card["evaluations"] == {part: source["evaluations"][part] for part in parts}
    assert shipped_card["configs"] == {part: source["configs"][part] for part in parts}
    assert "Carried over, not retrained" in open(os.path.join(dst, "MODEL_CARD.md")).read()
    with pytest.raises(ValueError, match="cannot carry"):
        card.carry_over(work, weights.SHIPPED, ["dit"])
    with pytest.raises(FileNotFoundError, match="no trained"):
        card.carry_over(work, str(tmp_path), ["vae"])


def test_ti2v_inputs_and_sampler_keep_the_first_frame():
    """Frame 0 of the TI2V input is the clean first-frame latent at timestep 0, the others the noisy latents at t;
    the sampler's output keeps the first frame exactly; bad first-frame shapes are named."""
    from fc_jax.models import dit
    from fc_jax.sampling.base import sample_ti2v

    config = load_config("tiny")
    model = dit.build_model(config)
    params = dit.init_params(model, jax.random.key(0))  # the head starts at zero upstream: perturb every leaf
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = treedef.unflatten([p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    first = jax.random.normal(jax.random.key(1), (2, 1, 4, 4, 48))
    noise = jax.random.normal(jax.random.key(2), (2, 3, 4, 4, 48))
    latents, timesteps = dit.ti2v_inputs(first, noise, jnp.array([500.0, 20.0]))
    np.testing.assert_array_equal(latents[:, 0], first[:, 0])
    np.testing.assert_array_equal(latents[:, 1:], noise[:, 1:])
    np.testing.assert_array_equal(timesteps, [[0, 500, 500], [0, 20, 20]])
    with pytest.raises(ValueError, match="first-frame latent"):
        dit.ti2v_inputs(first[:, :, :2], noise, 1.0)
    context = jax.random.normal(jax.random.key(3), (2, 5, config.model.text_dim))
    out = sample_ti2v(model, params, first, noise, context, jnp.zeros_like(context), num_steps=3, shift=3.0,
                      guidance_scale=2.0)
    np.testing.assert_array_equal(out[:, :1], first)
    assert out.shape == noise.shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.abs(out[:, 1:] - noise[:, 1:]).mean()) > 0.01  # the later frames were denoised


def test_base_loss_is_image_to_video_or_text_to_video(tiny_dit):
    """`train.text_to_video_prob` 0: the TI2V loss (frame 0 clean at timestep 0 and left out of the loss); 1: the
    text-to-video loss (every frame noised at t and counted); both computed here from the model's forward; a
    probability outside [0, 1] is named."""
    from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
    from fc_jax.models import dit
    from fc_jax.training.stages.base import base_loss

    config, model, params = tiny_dit
    video = jax.random.normal(jax.random.key(1), (2, 3, 4, 4, 48))
    batch = {"video": video, "context": jax.random.normal(jax.random.key(2), (2, 5, config.model.text_dim))}
    key = jax.random.key(3)
    key_t, key_noise = jax.random.split(key)
    t, weight = sample_training_timesteps(key_t, (2,), 3.0)
    noise = jax.random.normal(key_noise, video.shape)
    noisy, target, t = add_noise(video, noise, t), flow_target(video, noise), jnp.floor(t)
    i2v = dit.ti2v_forward(model, params, video[:, :1], noisy, t, batch["context"]) - target
    t2v = model.apply({"params": params}, noisy, jnp.repeat(t[:, None], 3, axis=1), batch["context"]) - target
    expected_i2v = jnp.mean(jnp.mean(jnp.square(i2v[:, 1:]), axis=(1, 2, 3, 4)) * weight)
    expected_t2v = jnp.mean(jnp.mean(jnp.square(t2v), axis=(1, 2, 3, 4)) * weight)
    assert abs(float(expected_i2v - expected_t2v)) > 1e-3 * float(expected_i2v)  # the two tasks differ here
    np.testing.assert_allclose(base_loss(model, 3.0, params, batch, key), expected_i2v, rtol=1e-5)
    np.testing.assert_allclose(base_loss(model, 3.0, params, batch, key, 1.0), expected_t2v, rtol=1e-5)
    with pytest.raises(ValueError, match="text_to_video_prob must be in"):
        base_loss(model, 3.0, params, batch, key, 1.5)


def _spec_with_motion(kind: str, speed: str = ""):
    from fc_jax.tinyworld import spec as S

    for seed in range(500):
        spec = S.sample_spec(seed, 128, 128, 25)
        if spec.motion.kind == kind and (not speed or spec.motion.speed == speed):
            return spec
    raise AssertionError(kind)


def test_direction_ok_calibration():
    """`motion/direction_ok`: 1 on ground-truth walks and in-place motions; 0 on a walk played backwards, a
    frozen walk, a walk scored against a caption that says to stand still, and a walk whose figure vanishes in
    every other frame (`figure_kept` catches it)."""
    from fc_jax.tinyworld.metrics import motion_metrics
    from fc_jax.tinyworld.render import render_sample

    for kind in ("walk_left", "walk_right"):
        spec = _spec_with_motion(kind, "slow")
        gt = render_sample(spec)
        assert motion_metrics(gt.video, spec, ground_truth=gt)["direction_ok"] == 1.0
        assert motion_metrics(gt.video[::-1], spec, ground_truth=gt)["direction_ok"] == 0.0
        frozen = np.repeat(gt.video[:1], len(gt.video), axis=0)
        assert motion_metrics(frozen, spec, ground_truth=gt)["direction_ok"] == 0.0
        stand = "the person stands still"
        assert motion_metrics(gt.video, spec, caption=stand, ground_truth=gt)["direction_ok"] == 0.0
        # The right drift with the figure dissolved (every other frame a blank wall) is not a walk.
        dissolved = gt.video.copy()
        dissolved[1::2] = gt.video[0, :1, :1]
        m = motion_metrics(dissolved, spec, ground_truth=gt)
        assert m["figure_kept"] < 0.6 and m["direction_ok"] == 0.0
    for kind in ("stand", "jump", "arm_swing", "turn"):
        spec = _spec_with_motion(kind)
        gt = render_sample(spec)
        m = motion_metrics(gt.video, spec, ground_truth=gt)
        assert m["direction_ok"] == 1.0 and m["figure_kept"] == 1.0, kind


def test_latent_calibration_is_exact_and_normalises():
    """Folding an affine map into the quant convs moves the raw latents exactly there (log-variance by 2 log a)
    and leaves the reconstruction unchanged; matching measured statistics to Wan's makes the normalised latents
    zero-mean, unit-variance."""
    from fc_jax.models import vae

    params = vae.init_params(load_config("tiny"), jax.random.key(0))
    video = jax.random.uniform(jax.random.key(1), (2, 5, 32, 32, 3), minval=-1.0, maxval=1.0)
    mu, logvar = vae.posterior_moments(params, video)
    a, b = np.linspace(0.5, 2.0, 48, dtype=np.float32), np.linspace(-1.0, 1.0, 48, dtype=np.float32)
    folded = vae.fold_latent_affine(params, a, b)
    mu2, logvar2 = vae.posterior_moments(folded, video)
    np.testing.assert_allclose(mu2, a * mu + b, atol=1e-5)
    np.testing.assert_allclose(logvar2, logvar + 2 * np.log(a), atol=1e-5)
    np.testing.assert_allclose(vae.decode_raw(folded, mu2), vae.decode_raw(params, mu), atol=1e-4)
    flat = np.asarray(mu).reshape(-1, 48)
    matched = vae.match_latent_statistics(params, flat.mean(0), flat.std(0))
    z = np.asarray(vae.encode_video(matched, video)).reshape(-1, 48)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"must be \[48\]"):
        vae.fold_latent_affine(params, a[:3], b)
