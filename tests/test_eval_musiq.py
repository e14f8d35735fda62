"""MUSIQ: the parameter tree against the official SPAQ checkpoint's names and shapes, the converter on an archive
of that structure, and the multi-scale patching / hashed positions / scale embedding on worked examples.

Parity with an independent implementation (pyiqa's PyTorch MUSIQ) is in tests/test_musiq_pyiqa_parity.py; it
runs where pyiqa imports (a venv with torch 2.14.1 + torchvision 0.29.1) and is skipped here."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.convert.common import CheckpointError, _flatten
from fc_jax.convert.musiq import convert_checkpoint
from fc_jax.models.musiq import (
    Musiq,
    MusiqConfig,
    MusiqScorer,
    Transformer,
    _gaussian_weights,
    extract_patches,
    gaussian_resize,
    hashed_positions,
    multiscale_patches,
    musiq_target_shapes,
)


def official_spaq_parameters() -> dict[str, tuple]:
    """Names and shapes of `opt/target` in the official multi-scale checkpoints, read off google-research
    `musiq/model/multiscale_transformer.py` (+ `_utils.py`, `resnet.py`) with `run_predict_image.py`'s config:
    hidden 384, mlp 1152, 6 heads, 14 layers, hash grid 10, 3 scales, resnet_emb num_layers 5 (one bottleneck
    unit, 64 -> 256), patch 32, representation_size None (no pre_logits), 1 class."""
    p = {"conv_root/kernel": (7, 7, 3, 64), "gn_root/scale": (64,), "gn_root/bias": (64,),
         "embedding/kernel": (8 * 8 * 256, 384), "embedding/bias": (384,),
         "head/kernel": (384, 1), "head/bias": (1,),
         "Transformer/posembed_input/pos_embedding": (1, 100, 384),
         "Transformer/scaleembed_input/scale_embedding": (1, 3, 384),
         "Transformer/cls": (1, 1, 384),
         "Transformer/encoder_norm/scale": (384,), "Transformer/encoder_norm/bias": (384,)}
    unit = "block1/unit1/"
    for conv, shape in (("conv_proj", (1, 1, 64, 256)), ("conv1", (1, 1, 64, 64)), ("conv2", (3, 3, 64, 64)),
                        ("conv3", (1, 1, 64, 256))):
        p[unit + conv + "/kernel"] = shape
        gn = unit + "gn" + conv[4:] if conv != "conv_proj" else unit + "gn_proj"
        p[gn + "/scale"] = p[gn + "/bias"] = (shape[-1],)
    for i in range(14):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            p[b + ln + "/scale"] = p[b + ln + "/bias"] = (384,)
        for proj in ("query", "key", "value"):
            p[b + f"SelfAttention_0/{proj}/kernel"] = (384, 6, 64)
            p[b + f"SelfAttention_0/{proj}/bias"] = (6, 64)
        p[b + "SelfAttention_0/out/kernel"] = (6, 64, 384)
        p[b + "SelfAttention_0/out/bias"] = (384,)
        p[b + "MlpBlock_0/Dense_0/kernel"], p[b + "MlpBlock_0/Dense_0/bias"] = (384, 1152), (1152,)
        p[b + "MlpBlock_0/Dense_1/kernel"], p[b + "MlpBlock_0/Dense_1/bias"] = (1152, 384), (384,)
    return p


def test_tree_matches_official_spaq_checkpoint():
    ours = {"/".join(k): tuple(v.shape) for k, v in _flatten(musiq_target_shapes(MusiqConfig())).items()}
    assert ours == official_spaq_parameters()


TINY = MusiqConfig(hidden_size=32, mlp_dim=48, num_heads=2, num_layers=2, grid_size=4, longer_side_lengths=(64,))


def _official_archive(path, config, extra_state=True):
    """An .npz laid out like the official files: opt/target/<path> parameters, opt/state/... optimizer state."""
    rng = np.random.default_rng(0)
    arrays = {"opt/target/" + "/".join(k): rng.normal(size=v.shape).astype(np.float32) * 0.1
              for k, v in _flatten(musiq_target_shapes(config)).items()}
    if extra_state:
        arrays["opt/state/step"] = np.array(1000)
        arrays["opt/state/param_states/head/kernel/grad_ema"] = np.zeros((32, 1), np.float32)
    np.savez(path, **arrays)
    return arrays


def test_converter_maps_official_layout(tmp_path):
    arrays = _official_archive(tmp_path / "ckpt.npz", TINY)
    params = convert_checkpoint(str(tmp_path / "ckpt.npz"), TINY)
    flat = _flatten(params)
    assert len(flat) == len(arrays) - 2
    for key, value in flat.items():
        np.testing.assert_array_equal(value, arrays["opt/target/" + "/".join(key)])
    img = np.random.default_rng(1).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    score = MusiqScorer(params, TINY)(img)
    assert math.isfinite(score)
    # Missing and unexpected tensors are named.
    del arrays["opt/target/head/bias"]
    arrays["opt/target/head/extra"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"opt/target/head/bias[\s\S]*opt/target/head/extra"):
        convert_checkpoint(str(tmp_path / "bad.npz"), TINY)


def test_same_padding_patches():
    """40 x 70 image, 32-px patches: 2 x 3 grid; TF 'SAME' pads 24 rows (12 top, 12 bottom) and 26 columns
    (13 left, 13 right) with zeros."""
    img = np.arange(40 * 70 * 3, dtype=np.float32).reshape(40, 70, 3) + 1
    patches, ch, cw = extract_patches(img, 32)
    assert (ch, cw) == (2, 3) and patches.shape == (6, 32 * 32 * 3)
    first = patches[0].reshape(32, 32, 3)
    assert (first[:12] == 0).all() and (first[:, :13] == 0).all()
    np.testing.assert_array_equal(first[12, 13], img[0, 0])
    last = patches[5].reshape(32, 32, 3)  # row 1, col 2: image rows 20..39 then 12 zero rows; cols 51..69 then 13 zeros
    np.testing.assert_array_equal(last[0, 0], img[20, 51])
    np.testing.assert_array_equal(last[19, 18], img[39, 69])
    assert (last[20:] == 0).all() and (last[:, 19:] == 0).all()


def test_hashed_positions_worked_example():
    # 2 x 3 patches on a 10 x 10 grid: rows floor(j * 10/2) = 0, 5; columns floor(j * 10/3) = 0, 3, 6.
    np.testing.assert_array_equal(hashed_positions(10, 2, 3), [0, 3, 6, 50, 53, 56])
    # 16 columns (more patches than grid cells): floor(j * 0.625).
    np.testing.assert_array_equal(hashed_positions(10, 1, 16)[:16],
                                  [0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 8, 9])


def test_gaussian_resize_worked_example():
    # 4 -> 2: each output samples at source 1.0 and 3.0; the two neighbours at distance 0.5 share the weight,
    # the one at 1.5 is at the kernel's radius and gets none.
    np.testing.assert_allclose(_gaussian_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], atol=1e-7)
    # 2 -> 3: output 0 samples at 1/3; distances 1/6 and 7/6, weights exp(-d^2 / (2 * 0.5^2)), normalised.
    w = np.exp(-np.array([1 / 6, 7 / 6]) ** 2 / 0.5)
    np.testing.assert_allclose(_gaussian_weights(2, 3)[0], w / w.sum(), rtol=1e-6)
    const = np.full((37, 53, 3), 0.25, np.float32)
    np.testing.assert_allclose(gaussian_resize(const, 20, 11), 0.25, rtol=1e-6)


def test_multiscale_layout_worked_example():
    """40 x 70 image, scales (32, 64) + native: 32 -> 18 x 32 (1 patch, 1 slot); 64 -> 37 x 64 (2 x 2 patches,
    4 slots); native 40 x 70 (2 x 3 patches). Scale ids 0, 1, 2 in that order."""
    cfg = MusiqConfig(longer_side_lengths=(64, 32), grid_size=10)
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    t = multiscale_patches(img, cfg)
    assert t["patches"].shape == (11, 32 * 32 * 3)
    np.testing.assert_array_equal(t["scale"], [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(t["spatial"], [0, 0, 5, 50, 55, 0, 3, 6, 50, 53, 56])
    assert t["mask"].all()
    assert t["patches"].min() >= -1 and t["patches"].max() <= 1
    # A tall narrow image: at scale 64 only 2 x 1 patches fill the 4 slots; the rest is zero padding, masked.
    tall = multiscale_patches(np.zeros((70, 20, 3), np.uint8), MusiqConfig(longer_side_lengths=(64,),
                                                                            use_original_resolution=False))
    np.testing.assert_array_equal(tall["mask"], [True, True, False, False])
    np.testing.assert_array_equal(tall["spatial"], [0, 50, 0, 0])
    assert (tall["patches"][2:] == 0).all()


def test_position_and_scale_embeddings_are_added_by_lookup():
    """With no encoder layers the Transformer is LayerNorm([cls, x + pos[spatial] + scale_emb[scale]])."""
    cfg = MusiqConfig(hidden_size=8, num_heads=2, mlp_dim=8, num_layers=0, grid_size=3, longer_side_lengths=(32, 64))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 8)).astype(np.float32)
    spatial, scale = np.array([[0, 4, 8, 2]], np.int32), np.array([[0, 1, 2, 2]], np.int32)
    mask = np.ones((1, 4), bool)
    params = jax.jit(Transformer(cfg).init)(jax.random.key(0), x, spatial, scale, mask)["params"]
    params["cls"] = rng.normal(size=(1, 1, 8)).astype(np.float32)
    out = jax.jit(Transformer(cfg).apply)({"params": params}, x, spatial, scale, mask)
    pos = np.asarray(params["posembed_input"]["pos_embedding"])[0]
    sc = np.asarray(params["scaleembed_input"]["scale_embedding"])[0]
    tokens = np.concatenate([params["cls"][0], x[0] + pos[spatial[0]] + sc[scale[0]]])
    ln = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(out)[0], ln, rtol=1e-5, atol=1e-5)


def test_padding_tokens_do_not_change_the_score():
    """Masked (padded) tokens must not reach the class token: appending padding leaves the output unchanged."""
    params = jax.jit(Musiq(TINY).init)(jax.random.key(0), *_inputs(TINY, 5))["params"]
    apply = jax.jit(Musiq(TINY).apply)
    a = apply({"params": params}, *_inputs(TINY, 5))
    b = apply({"params": params}, *_inputs(TINY, 5, pad=3))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _inputs(cfg, n, pad=0):
    rng = np.random.default_rng(0)
    patches = np.concatenate([rng.uniform(-1, 1, (n, 32 * 32 * 3)), rng.uniform(-1, 1, (pad, 32 * 32 * 3))])
    spatial = np.concatenate([np.arange(n) % cfg.grid_size**2, np.zeros(pad, int)]).astype(np.int32)
    scale = np.concatenate([np.arange(n) % cfg.num_scales, np.zeros(pad, int)]).astype(np.int32)
    mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    return tuple(jnp.asarray(a)[None] for a in (patches.astype(np.float32), spatial, scale, mask))


def test_video_quality_metric_long_side_and_mean(tmp_path):
    from fc_jax.eval.metrics.quality import VideoQuality
    from fc_jax.frame_scores import limit_long_side
    from fc_jax.video import Video

    assert limit_long_side(np.zeros((1280, 704, 3), np.uint8)).shape == (512, 281, 3)
    assert limit_long_side(np.zeros((300, 200, 3), np.uint8)).shape == (300, 200, 3)
    _official_archive(tmp_path / "ckpt.npz", TINY, extra_state=False)
    params = convert_checkpoint(str(tmp_path / "ckpt.npz"), TINY)
    frames = np.random.default_rng(0).integers(0, 256, (3, 600, 300, 3), dtype=np.uint8)
    metric = VideoQuality(params, "tiny", TINY)
    result = metric(None, Video("v", frames, 24.0))
    expected = [metric.scores.scorer(limit_long_side(f)) for f in frames]  # one frame at a time, same compiled model
    np.testing.assert_allclose(result.per_frame["musiq"], expected, rtol=1e-6)
    assert result.values["vq"] == pytest.approx(np.mean(expected) / 100)
