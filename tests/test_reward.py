"""Aesthetic reward model: parity with transformers CLIPVisionModelWithProjection + the LAION head at a tiny config,
the converters on real key layouts, the real parameter count, the JAX preprocessing, the FrameReward interface."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.convert.common import CheckpointError
from fc_jax.convert.reward import clip_config_from_folder, convert_aesthetic_head, load_reward_params
from fc_jax.models.reward import (
    CLIP_MEAN,
    CLIP_STD,
    AestheticReward,
    CLIPVisionConfig,
    aesthetic_frame_reward,
    clip_preprocess,
    reward_target_shapes,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
            patch_size=14, projection_dim=768)


def _laion_head():
    """The LAION MLP as its .pth is laid out (Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear)."""
    nn = torch.nn
    mlp = nn.Module()
    mlp.layers = nn.Sequential(nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                               nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
    mlp.forward = lambda x: mlp.layers(x)
    return mlp.eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A full transformers CLIPModel (text tower included, as openai/clip-vit-large-patch14 ships) + a LAION head."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("clip")
    config = transformers.CLIPConfig(
        vision_config=dict(TINY),
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=8),
        projection_dim=768,
    )
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial norms everywhere
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(root / "clip")
    head = _laion_head()
    torch.save(head.state_dict(), root / "head.pth")
    vision = transformers.CLIPVisionModelWithProjection.from_pretrained(root / "clip").eval()
    return root, vision, head


def test_parity_with_transformers(tiny_checkpoint):
    root, vision, head = tiny_checkpoint
    params, config = load_reward_params(str(root / "clip"), str(root / "head.pth"))
    assert config.hidden_size == 32 and config.num_layers == 2 and config.image_size == 28
    pixels = np.random.default_rng(0).normal(size=(3, 28, 28, 3)).astype(np.float32)
    with torch.no_grad():
        ref_embeds = vision(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).image_embeds
        ref_norm = ref_embeds / ref_embeds.norm(dim=-1, keepdim=True)
        ref = head(ref_norm)[:, 0].numpy()
    ours = jax.jit(AestheticReward(config).apply)({"params": params}, jnp.asarray(pixels))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4, atol=1e-6)
    from fc_jax.models.reward import CLIPVision

    embeds = jax.jit(CLIPVision(config).apply)({"params": params["clip"]}, jnp.asarray(pixels))
    rel = np.abs(np.asarray(embeds) - ref_embeds.numpy()).max() / np.abs(ref_embeds.numpy()).max()
    assert rel < 1e-4


def test_real_config_parameter_count():
    shapes = reward_target_shapes(CLIPVisionConfig())
    clip = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["clip"]))
    head = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["head"]))
    assert clip == 303_966_208
    assert head == 768 * 1024 + 1024 + 1024 * 128 + 128 + 128 * 64 + 64 + 64 * 16 + 16 + 16 + 1


def test_preprocess_matches_clip_image_processor():
    """Our JAX preprocessing vs transformers' PIL path on a smooth non-square image: same geometry, same
    normalisation, the same uint8 rounding (within one step: PIL's fixed-point weights)."""
    h, w = 300, 200
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx / w) * 255, (yy / h) * 255, ((xx + yy) / (h + w)) * 255], -1).round().astype(np.uint8)
    proc = transformers.CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224})
    ref = proc(images=[img], return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    ours = np.asarray(clip_preprocess(jnp.asarray(img[None] / 255.0)))[0]
    assert ours.shape == (224, 224, 3)
    step = 1 / 255 / min(CLIP_STD)
    assert np.abs(ours - ref).max() < 1.01 * step
    # Known pixel: the centre crop keeps the middle rows (long side 336 -> offset 56).
    mean_rgb = (ours * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)).mean(axis=(0, 1))
    np.testing.assert_allclose(mean_rgb[:2], [0.5, 0.5], atol=0.01)


def test_frame_reward_interface(tiny_checkpoint):
    root, vision, head = tiny_checkpoint
    params, config = load_reward_params(str(root / "clip"), str(root / "head.pth"))
    reward = aesthetic_frame_reward(params, config)
    frames = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(4, 40, 30, 3)), jnp.float32)
    scores = reward(frames)
    assert scores.shape == (4,) and scores.dtype == jnp.float32
    # Same numbers as preprocessing by hand and calling the model.
    pixels = clip_preprocess((frames + 1) / 2, config.image_size)
    direct = jax.jit(AestheticReward(config).apply)({"params": params}, pixels)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(direct), rtol=1e-5)
    assert np.unique(np.round(np.asarray(scores), 6)).size == 4  # different frames, different scores


def test_converter_errors(tiny_checkpoint, tmp_path):
    root, _, head = tiny_checkpoint
    sd = head.state_dict()
    sd["layers.7.weight"] = torch.zeros(2, 16)  # wrong shape
    del sd["layers.0.bias"]  # missing
    torch.save(sd, tmp_path / "bad_head.pth")
    with pytest.raises(CheckpointError, match="layers.0.bias"):
        convert_aesthetic_head(str(tmp_path / "bad_head.pth"))
    sd = head.state_dict()
    sd["layers.7.weight"] = torch.zeros(2, 16)
    torch.save(sd, tmp_path / "bad_head2.pth")
    with pytest.raises(CheckpointError, match=r"layers.7.weight: shape \(2, 16\)"):
        convert_aesthetic_head(str(tmp_path / "bad_head2.pth"))
    with pytest.raises(CheckpointError, match="not a transformers CLIP vision checkpoint"):
        load_reward_params(str(root / "head.pth"), str(root / "head.pth"))


def test_config_from_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": dict(TINY, num_hidden_layers=3),
                                                      "projection_dim": 768}))
    cfg = clip_config_from_folder(str(tmp_path))
    assert (cfg.num_layers, cfg.hidden_size, cfg.image_size) == (3, 32, 28)
    os.remove(tmp_path / "config.json")
    assert clip_config_from_folder(str(tmp_path)) == CLIPVisionConfig()


def test_aesthetic_metric_is_the_mean_frame_reward(tiny_checkpoint):
    from fc_jax.eval.metrics.aesthetic import Aesthetic
    from fc_jax.video import Video

    root, _, _ = tiny_checkpoint
    params, config = load_reward_params(str(root / "clip"), str(root / "head.pth"))
    frames = np.random.default_rng(2).integers(0, 256, (5, 30, 40, 3), dtype=np.uint8)
    result = Aesthetic(params, config, "tiny", batch=2)(None, Video("v", frames, 24.0))
    direct = np.asarray(aesthetic_frame_reward(params, config)(jnp.asarray(frames / 127.5 - 1.0, jnp.float32)))
    np.testing.assert_allclose(result.per_frame["aesthetic"], direct, rtol=1e-5)
    assert result.values["aesthetic"] == pytest.approx(float(direct.mean()), rel=1e-5)
