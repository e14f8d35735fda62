"""fc_jax computes what the authors' code computes (issue 13), one test per alignment; each fails on the former
behaviour. The authors' files are cited in the code that follows them."""

from __future__ import annotations

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageOps

from fc_jax import flow
from fc_jax import kv_cache as kvc
from fc_jax.config import load_config
from fc_jax.data import pipeline, preencode, sources, synthetic, triplets
from fc_jax.models import dit
from fc_jax.training import distill
from fc_jax.training.rollout import self_forcing_rollout

H, W = 4, 6  # latent grid of the rollout tests: 2 x 3 = 6 tokens per frame


@pytest.fixture(scope="module")
def rollout_setup(tiny_dit):
    """(model, params, prefilled cache (window: conditions + 2 history chunks + the current), context, t, σ)."""
    _, model, params = tiny_dit
    spec = kvc.CacheSpec(6, window_frames=11, sink_frames=2)
    ks = jax.random.split(jax.random.key(2), 3)
    ref, garment = (jax.random.normal(k, (1, 1, H, W, 48)) for k in ks[:2])
    context = jax.random.normal(ks[2], (1, 16, 32))
    cache = kvc.prefill(model, params, kvc.init_cache(model, spec, 1, H, W), ref, garment, context)
    t, s = flow.student_schedule([1000, 750, 500, 250], 5.0)
    return model, params, cache, context, jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)


def _leaf(tree, *path):
    for k in path:
        tree = tree[k]
    return np.asarray(tree)


# ------------------------------------------------------------------------------------------------------------
# 1. The negative prompt: config data, encoded once beside the data set, the real score's unconditional text.


def test_the_negative_prompt_is_config_data_with_the_authors_text():
    config = load_config("gr_dmd")
    prompt = config.sampling.negative_prompt
    assert prompt.startswith("色调艳丽，过曝，静态") and prompt.endswith("背景人很多，倒着走") and len(prompt) == 137
    assert config.sampling.negative_embedding == ""


def _latent_dataset(tmp_path, negative: np.ndarray | None):
    """A small FashionLatents data set (synthetic records) with its empty prompt and, if given, a negative prompt
    embedding written the way preencode writes it (the text encoder: a lookup of fixed embeddings)."""
    builder = triplets.write_dataset("latents", str(tmp_path / "latents"),
                                     {"train": synthetic.synthetic_latents(8, 6, 4, 2, 48, 32, seed=1)})
    empty = np.full((1, 32), 0.25, np.float32)
    table = {"": empty, **({load_config("gr_dmd").sampling.negative_prompt: negative} if negative is not None else {})}

    def text(prompts):
        rows = [table[p] for p in prompts]
        out = np.zeros((len(rows), 16, 32), np.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, np.array([len(r) for r in rows], np.int32)

    if negative is not None:
        preencode.write_prompt_embeddings(builder, text, load_config("gr_dmd").sampling.negative_prompt)
    else:
        np.save(triplets.empty_prompt_path(builder), empty)
    return builder, empty


def _gr_dmd_setup(tmp_path, **distill_overrides):
    from fc_jax.training.setup import setup

    cfg = load_config("gr_dmd:tiny")
    cfg.data.update(dict(synthetic=False, data_dir=str(tmp_path / "latents"), shuffle=False))
    cfg.train.eval_every = 0
    cfg.distill.update(distill_overrides)
    return setup(cfg, devices=jax.devices()[:1], mesh_sizes=dict(data=1, fsdp=1, tensor=1, sequence=1))


def test_the_real_scores_unconditional_branch_sees_the_negative_prompt(tmp_path):
    negative = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    builder, empty = _latent_dataset(tmp_path, negative)
    s = _gr_dmd_setup(tmp_path)
    data = s.stage.open_data(s, str(tmp_path))
    batches = s.stage.device_batch(s, next(data.train))
    for batch in batches:
        rows = np.asarray(batch["negative_context"])
        np.testing.assert_array_equal(rows[:, :5], np.broadcast_to(negative, (rows.shape[0], 5, 32)))
        assert not rows[:, 5:].any() and not np.allclose(rows[:, :1], empty)  # not the empty prompt
    # The stored embedding is checked against the configured text.
    s.config.sampling.negative_prompt = "another prompt"
    with pytest.raises(pipeline.NegativePromptMismatch, match="config.sampling.negative_prompt"):
        sources.negative_prompt(s.config, builder)


def test_without_a_text_encoder_the_negative_is_the_empty_prompt_unless_a_file_is_given(tmp_path):
    builder, empty = _latent_dataset(tmp_path, None)
    config = load_config("gr_dmd:tiny")
    config.data.synthetic = False
    with pytest.raises(FileNotFoundError, match="negative_embedding"):  # a real data set must have one
        sources.negative_prompt(config, builder)
    config.data.synthetic = True  # synthetic data sets: the empty prompt
    np.testing.assert_array_equal(sources.negative_prompt(config, builder), empty)
    path = tmp_path / "negative.npy"
    np.save(path, np.ones((3, 32), np.float32))
    config.sampling.negative_embedding = str(path)
    np.testing.assert_array_equal(sources.negative_prompt(config, builder), np.ones((3, 32)))


def test_the_teacher_sampler_takes_the_configured_negative_embedding(tmp_path):
    from fc_jax import sample

    config = load_config("tiny")
    with pytest.raises(SystemExit, match="negative_prompt"):
        sample._negative_context(config, {})
    np.save(tmp_path / "negative.npy", np.full((2, 32), 3.0, np.float32))
    config.sampling.negative_embedding = str(tmp_path / "negative.npy")
    negative = sample._negative_context(config, {})
    assert negative.shape == (1, 16, 32) and (negative[0, :2] == 3).all() and not negative[0, 2:].any()


# ------------------------------------------------------------------------------------------------------------
# 2. The text path learns in the generator step.


def test_generator_gradient_reaches_the_text_embedding_and_cross_attention_kv(tiny_dit):
    _, _, params = tiny_dit
    cfg = load_config("gr_dmd:tiny")
    model = dit.build_model(cfg)
    rng = np.random.default_rng(0)
    batch = {"reference": rng.standard_normal((1, 1, 4, 2, 48), np.float32),
             "garment": rng.standard_normal((1, 1, 4, 2, 48), np.float32),
             "context": rng.standard_normal((1, 16, 32), np.float32),
             "negative_context": rng.standard_normal((1, 16, 32), np.float32)}
    distiller = distill.Distiller(model, cfg)
    grads = jax.jit(jax.grad(lambda g: distiller.generator_loss(g, params, params, None, batch, jax.random.key(1),
                                                                jnp.int32(2))[0]))(params)
    for path in (("text_embedding_0", "kernel"), ("text_embedding_1", "kernel"),
                 ("blocks", "block", "cross_attn", "k", "kernel"), ("blocks", "block", "cross_attn", "v", "kernel")):
        assert np.abs(_leaf(grads, *path)).max() > 0, path


# ------------------------------------------------------------------------------------------------------------
# 3. The cross-chunk gradient: an explicit straight-through estimator.


def test_straight_through_equals_the_hand_derived_cross_chunk_gradient(rollout_setup):
    """Two chunks, exit step 0 (each chunk's exit input is its fresh noise), loss on the last chunk L(x0_1).
    By hand: dL/dθ = ∂L/∂θ (chunk 1's forward on the committed cache, held fixed: the "none" gradient)
    + (∂L/∂K_slot0)ᵀ ∂K0/∂θ, with K_slot0 the K/V chunk 0 committed to the cache (per layer) and K0 the K/V of
    chunk 0's own exit-step forward: forward values from the commit, gradient to the exit step."""
    model, params, cache, _, t, s = rollout_setup
    key, w = jax.random.key(4), jax.random.normal(jax.random.key(5), (1, 3, H, W, 48))
    frozen, spec = jax.lax.stop_gradient(params), cache.spec
    noise = [jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, c), 0), (1, 3, H, W, 48)) for c in (0, 1)]
    committed = kvc.commit(model, frozen, cache, kvc.denoise(model, frozen, cache, noise[0], t[0], s[0]))

    def last_chunk_loss(p, k, v):
        return jnp.sum(w * kvc.denoise(model, p, committed.replace(k=k, v=v), noise[1], t[0], s[0]))

    direct, g_k, g_v = jax.grad(last_chunk_loss, argnums=(0, 1, 2))(params, committed.k, committed.v)
    slot = slice(spec.cond_tokens, spec.cond_tokens + spec.chunk_tokens)

    def chunk0_exit_kv(p):  # chunk 0's exit-step forward on the prefilled cache, its new K/V [L, B, T, N, H]
        _, kv = model.apply({"params": p}, noise[0], jnp.full((1, 3), t[0]), None, 2 + jnp.arange(3),
                            kv_lengths=jnp.full((1,), spec.cond_tokens + spec.chunk_tokens), write_at=spec.cond_tokens,
                            cache={"k": cache.k, "v": cache.v, "cross_k": cache.cross_k, "cross_v": cache.cross_v},
                            return_kv=True)
        return kv["k"], kv["v"]

    _, vjp = jax.vjp(chunk0_exit_kv, params)
    (through_cache,) = vjp((g_k[:, :, slot], g_v[:, :, slot]))
    expected = jax.tree.map(jnp.add, direct, through_cache)

    def rollout_loss(p, straight_through):
        x, _ = self_forcing_rollout(model, p, cache, key, t, s, num_chunks=2, exit_step=0,
                                    straight_through=straight_through)
        return jnp.sum(w * x[:, 3:]), x

    run = jax.jit(jax.grad(rollout_loss, has_aux=True), static_argnums=1)
    (g_st, x_st), (g_none, x_none) = run(params, True), run(params, False)
    np.testing.assert_array_equal(np.asarray(x_st), np.asarray(x_none))  # forward values unchanged
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(through_cache)) > 0
    for name, got, want in (("straight_through", g_st, expected), ("none", g_none, direct)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6 * max(1.0, np.abs(b).max()), err_msg=name)


def test_straight_through_is_exact_in_the_forward_pass_and_routes_the_gradient():
    value, surrogate = jnp.asarray([1.0, 2.5], jnp.bfloat16), jnp.asarray([0.3, -7.1], jnp.float32)
    out = dit.straight_through(value, surrogate)
    assert out.dtype == jnp.bfloat16 and np.array_equal(np.asarray(out), np.asarray(value))
    g_value, g_surrogate = jax.grad(lambda v, s: jnp.sum(dit.straight_through(v, s).astype(jnp.float32) * 3.0),
                                    argnums=(0, 1))(value, surrogate)
    assert not np.asarray(g_value, np.float32).any() and np.array_equal(np.asarray(g_surrogate), [3.0, 3.0])


def test_the_configured_cross_chunk_gradient_is_the_straight_through_one():
    model = dit.build_model(load_config("gr_dmd:tiny"))
    assert distill.Distiller(model, load_config("gr_dmd:tiny")).straight_through
    cfg = load_config("gr_dmd:tiny")
    cfg.distill.cross_chunk_gradient = "detached"
    with pytest.raises(ValueError, match="cross_chunk_gradient 'detached'"):
        distill.Distiller(model, cfg)


# ------------------------------------------------------------------------------------------------------------
# 4-5. Captions: the authors' en_long order (dynamic, static); stage 2 always the full caption, no text drop.


def test_stage_2_always_uses_the_full_caption_and_drops_no_text():
    tf, sft, gr = (load_config(n) for n in ("teacher_forcing", "sft_teacher", "gr_dmd"))
    assert (tf.train.text_drop_prob, tf.train.dynamic_caption_prob) == (0.0, 0.0)  # tf_wan22_ic.yaml: mixed false
    assert (sft.train.text_drop_prob, sft.train.dynamic_caption_prob) == (0.1, 0.7)  # sft_ic.py drop 0.1, mixed
    assert (gr.train.text_drop_prob, gr.train.dynamic_caption_prob) == (0.0, 0.7)  # gr_dmd yaml: mixed true


def test_imported_en_long_is_dynamic_then_static_and_the_full_caption_keeps_that_order(monkeypatch):
    # The shape of the authors' assets/examples/meta_train.csv: en_long = [motion, appearance].
    prompt = json.dumps({"en_long": ["A woman walks toward the camera and waves.",
                                     "The woman wears a green knit sweater; grey wall behind her."]})
    static, dynamic = triplets.captions_from_prompt(prompt, "row 2")
    assert static.startswith("The woman wears") and dynamic.startswith("A woman walks")
    seen = []

    def text(prompts):
        seen.extend(prompts)
        return np.zeros((len(prompts), 16, 32), np.float32), np.ones((len(prompts),), np.int32)

    from fc_jax.models import vae

    monkeypatch.setattr(vae, "encode_video", lambda p, x: np.zeros((x.shape[0], 3, 4, 2, 48), np.float32))
    monkeypatch.setattr(vae, "encode_image", lambda p, x: np.zeros((x.shape[0], 1, 4, 2, 48), np.float32))
    encoder = preencode.BatchEncoder(None, text, jax.local_devices()[:1])
    frames = np.zeros((1, 9, 64, 32, 3), np.uint8)
    encoder({"id": ["a"], "video": frames, "reference": frames[:, 0], "garment": frames[:, 0],
             "static_caption": [static], "dynamic_caption": [dynamic], "garment_type": ["upper"], "source": ["{}"]})
    assert seen == [dynamic, f"{dynamic} {static}"]  # alone: en_long[0]; full: en_long[0] + " " + en_long[1]


# ------------------------------------------------------------------------------------------------------------
# 6. The generator and the critic step each draw their own batch and exit step.


class _RecordingSteps:
    """Stands in for `distill.CompiledSteps`: records which batch and exit step each step is run with."""

    def __init__(self):
        self.calls, self.reward_params = [], None

    def exit_step(self, value):
        return value

    def generator(self, batch):
        return lambda state, real, reward, b, e: self._record("generator", state, b, e)

    def critic(self, batch):
        return lambda state, b, e: self._record("critic", state, b, e)

    def _record(self, which, state, batch, exit_step):
        self.calls.append((which, batch["name"], exit_step))
        if which == "critic":
            state = types.SimpleNamespace(step=state.step + 1)
        return state, {"finite": True}


@pytest.mark.parametrize("shared", [False, True])
def test_generator_and_critic_steps_draw_their_own_batch_and_exit_step(shared):
    steps, state = _RecordingSteps(), types.SimpleNamespace(step=np.int32(0))
    for _ in range(40):
        state, _ = distill.iteration(steps, state, None, distill.IterationBatches({"name": "g"}, {"name": "c"}),
                                     seed=3, generator_every=1, num_student_steps=4, shared_draws=shared)
    gen = [(b, e) for w, b, e in steps.calls if w == "generator"]
    critic = [(b, e) for w, b, e in steps.calls if w == "critic"]
    assert {b for b, _ in gen} == {"g"} and {b for b, _ in critic} == {"c"}
    same = [g[1] == c[1] for g, c in zip(gen, critic)]
    assert all(same) if shared else not all(same)


def test_the_stage_reads_a_batch_for_each_step(tmp_path):
    _latent_dataset(tmp_path, np.ones((2, 32), np.float32))
    s = _gr_dmd_setup(tmp_path)
    local = next(s.stage.open_data(s, str(tmp_path)).train)
    assert len(local["id"]) == 2 * s.host_rows  # two draws per iteration, one grain position per driver step
    batches = s.stage.device_batch(s, local)
    np.testing.assert_array_equal(np.asarray(batches.critic["reference"]), local["reference"][s.host_rows:])
    assert not np.allclose(np.asarray(batches.generator["reference"]), np.asarray(batches.critic["reference"]))
    shared = _gr_dmd_setup(tmp_path, shared_draws=True)
    local = next(shared.stage.open_data(shared, str(tmp_path)).train)
    pair = shared.stage.device_batch(shared, local)
    assert len(local["id"]) == shared.host_rows and pair.generator is pair.critic


# ------------------------------------------------------------------------------------------------------------
# 7. Reward preprocessing: uint8 frames and PIL's two-pass bicubic, as the CLIP processor.


def test_reward_preprocessing_matches_the_clip_processor_on_uint8_frames():
    transformers = pytest.importorskip("transformers")
    from fc_jax.models.reward import CLIP_STD, AestheticReward, CLIPVisionConfig, clip_preprocess

    proc = transformers.CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224})
    frames = np.random.default_rng(0).uniform(-1, 1, (2, 1280, 704, 3)).astype(np.float32)  # decoded, in [-1, 1]
    as_uint8 = np.clip(np.round((frames * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)  # models/gr_dmd_ic.py:205
    ref = proc(images=list(as_uint8), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    steps = lambda x: np.abs(x - ref) / (1 / 255 / np.asarray(CLIP_STD))  # in uint8 steps
    ours, floats = (np.asarray(clip_preprocess(jnp.asarray((frames + 1) / 2), quantize=q)) for q in (True, False))
    assert steps(ours).max() <= 1.0 + 1e-4 and (steps(ours) > 0.5).mean() < 2e-3
    assert (steps(floats) > 0.5).mean() > 0.05  # the former float path: one step off on over 5% of the pixels
    # The reward of the same frames through either preprocessing, on a random CLIP at the real input size.
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4)
    model = AestheticReward(config)
    params = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    reward = jax.jit(lambda x: model.apply({"params": params}, x))
    r_ref, r_ours, r_floats = (np.asarray(reward(jnp.asarray(x))) for x in (ref, ours, floats))
    assert np.abs(r_ours - r_ref).max() < 0.1 * np.abs(r_floats - r_ref).max()


# ------------------------------------------------------------------------------------------------------------
# 8. σ from the authors' table: the student's from the unfloored warped timestep; DMD, critic and commit noise.


def test_student_sigma_is_the_unfloored_warped_entry_and_the_table_has_no_zero():
    t, sigma = flow.student_schedule([1000, 750, 500, 250], 5.0)
    np.testing.assert_array_equal(t, [1000, 937, 833, 625])
    np.testing.assert_allclose(sigma, [1.0, 0.9375, 2.5 / 3.0, 0.625], rtol=1e-12)  # not σ(937), σ(833)
    assert flow.table_sigma(0.0, 5.0) == pytest.approx(5 * 0.001 / (1 + 4 * 0.001))  # t = 0: the last entry
    t_dmd = jnp.asarray([20.0, 980.0, 937.5, 0.0])
    np.testing.assert_allclose(np.asarray(flow.table_sigma(t_dmd, 5.0)), flow.table_sigma(np.asarray(t_dmd), 5.0),
                               rtol=1e-6)


def test_the_rollout_commits_each_chunk_noised_to_the_tables_smallest_sigma(rollout_setup):
    model, params, cache, _, t, s = rollout_setup
    run = jax.jit(functools.partial(self_forcing_rollout, model, num_chunks=2, exit_step=3, gradient=False),
                  static_argnames="commit_sigma")
    clean, clean_cache = run(params, cache, jax.random.key(0), t, s)
    noised, noised_cache = run(params, cache, jax.random.key(0), t, s, commit_sigma=float(flow.table_sigma(0.0, 5.0)))
    np.testing.assert_array_equal(np.asarray(clean[:, :3]), np.asarray(noised[:, :3]))  # chunk 0 is made first
    assert not np.allclose(np.asarray(clean[:, 3:]), np.asarray(noised[:, 3:]))  # chunk 1 reads the noised commit
    c = cache.spec.cond_tokens
    assert not np.allclose(np.asarray(clean_cache.k[:, :, c:]), np.asarray(noised_cache.k[:, :, c:]))
    assert distill.Distiller(dit.build_model(load_config("gr_dmd:tiny")), load_config("gr_dmd:tiny")).commit_sigma \
        == pytest.approx(0.00498, abs=1e-5)


# ------------------------------------------------------------------------------------------------------------
# 9. Image resampling: the authors' inference rules by default, their training rules in the importer.


def _photo(h: int, w: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_inference_preprocessing_is_lanczos_fit_and_bicubic_pad():
    from fc_jax import images

    photo = _photo(93, 171)
    fit = np.asarray(ImageOps.fit(photo, (32, 64), method=Image.Resampling.LANCZOS), np.float32) / 127.5 - 1
    pad = np.asarray(ImageOps.pad(photo, (32, 64), color=(255, 255, 255)), np.float32) / 127.5 - 1
    np.testing.assert_array_equal(images.reference_image(photo, 64, 32), fit)  # predictor/infer_ic.py:59
    np.testing.assert_array_equal(images.garment_image(photo, 64, 32), pad)  # predictor/infer_ic.py:64


def test_training_preprocessing_is_bilinear_with_rounded_crop_offsets(tmp_path):
    from fc_jax import images

    photo = _photo(20, 23)  # cover 40 x 30: scale 2 -> 40 x 46, crop offset round(16 / 2) = 8; 46 - 30 = 16
    wide = _photo(10, 15)  # cover 20 x 27: scale 2 -> 20 x 30, offset round(1.5) = 2 (floor would give 1)
    for img, (h, w) in ((photo, (40, 30)), (wide, (20, 27))):
        scale = max(h / img.size[1], w / img.size[0])
        big = img.resize((int(img.size[0] * scale), int(img.size[1] * scale)), Image.Resampling.BILINEAR)
        left, top = int(round((big.size[0] - w) / 2.0)), int(round((big.size[1] - h) / 2.0))
        want = np.asarray(big.crop((left, top, left + w, top + h)))
        np.testing.assert_array_equal(np.asarray(images.cover_crop(img, h, w, "training")), want)
    # The importer reads with these rules (datasets/fashion_dataset.py): a manifest row's reference image.
    av = pytest.importorskip("av")
    clip = tmp_path / "a.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 64, "yuv420p"
        for _ in range(9):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 32, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    wide.resize((45, 30)).save(tmp_path / "a_src.png")
    _photo(30, 60).save(tmp_path / "a_cloth.png")
    manifest = tmp_path / "meta.csv"
    manifest.write_text('video,prompt\na.mp4,"{""en_long"": [""walks"", ""a shirt""]}"\n')
    (example,) = triplets.examples_from_manifest(str(manifest), height=64, width=32, num_frames=9)
    with Image.open(tmp_path / "a_src.png") as im:
        np.testing.assert_array_equal(example["reference"], np.asarray(images.cover_crop(im.convert("RGB"), 64, 32,
                                                                                         "training")))
    with pytest.raises(ValueError, match="unknown resampling rule 'lanczos'"):
        images.cover_crop(photo, 4, 4, "lanczos")


# ------------------------------------------------------------------------------------------------------------
# 11. The teacher's σ grid: Wan's linspace(0.999, 0) as an option (diffusers' stays the default).


def test_wan_sigma_grid_follows_wans_formula():
    from fc_jax.sampling.unipc import flow_sigmas, unipc_schedule

    n, shift = 50, 5.0
    sigma_max = float(np.float32(1.0 - np.linspace(1, 1 / 1000, 1000)[::-1][0]))  # Wan: (1 - alphas)[0] in fp32
    base = np.linspace(sigma_max, 0.0, n + 1)[:-1]
    wan = np.concatenate([shift * base / (1 + (shift - 1) * base), [0.0]]).astype(np.float32)
    np.testing.assert_array_equal(flow_sigmas(n, shift, grid="wan"), wan)
    assert wan[0] < flow_sigmas(n, shift)[0] < 1.0  # diffusers' grid starts nearer pure noise
    np.testing.assert_array_equal(unipc_schedule(n, shift, grid="wan").timesteps, (wan[:-1] * 1000).astype(np.int64))
    assert load_config("tiny").sampling.teacher_sigmas == "diffusers"
    with pytest.raises(ValueError, match="unknown σ grid 'karras'"):
        flow_sigmas(n, shift, grid="karras")
