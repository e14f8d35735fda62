"""WanDiT: parity with diffusers' WanTransformer3DModel through our converter, both checkpoint layouts."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.config import load_config
from fc_jax.convert import CheckpointError
from fc_jax.convert.dit import convert_checkpoint, load_dit_params
from fc_jax.models import dit

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# diffusers -> official Wan2.2 key names, written from the rename table in REFERENCE §1 (independent of our
# converter's key map, which goes from each layout to our tree).
DIFFUSERS_TO_OFFICIAL = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"\.scale_shift_table$", ".modulation"),
    (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.o."),
    (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
    (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."),
    (r"\.attn1\.norm_", ".self_attn.norm_"),
    (r"\.attn2\.norm_", ".cross_attn.norm_"),
    (r"\.norm2\.", ".norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
]


def to_official(key: str) -> str:
    for pattern, repl in DIFFUSERS_TO_OFFICIAL:
        key = re.sub(pattern, repl, key)
    return key


@pytest.fixture(scope="module")
def config():
    return load_config("tiny")


@pytest.fixture(scope="module")
def torch_model(config):
    m = config.model
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=tuple(m.patch_size),
        num_attention_heads=m.num_heads,
        attention_head_dim=m.dim // m.num_heads,
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        text_dim=m.text_dim,
        freq_dim=m.freq_dim,
        ffn_dim=m.ffn_dim,
        num_layers=m.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=m.eps,
        rope_max_seq_len=m.rope_max_positions,
    ).eval()
    with torch.no_grad():  # random, non-zero weights everywhere (the head is zero-initialised upstream)
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


@pytest.fixture(scope="module")
def checkpoints(torch_model, tmp_path_factory):
    """The tiny model saved in the diffusers layout (one file) and the official layout (2 shards + index)."""
    root = tmp_path_factory.mktemp("dit_ckpt")
    state = {k: v.detach().contiguous() for k, v in torch_model.state_dict().items()}
    diffusers_dir = root / "diffusers"
    diffusers_dir.mkdir()
    safetensors_torch.save_file(state, str(diffusers_dir / "diffusion_pytorch_model.safetensors"))

    official = {to_official(k): v for k, v in state.items()}
    assert len(official) == len(state)
    official_dir = root / "official"
    official_dir.mkdir()
    keys = sorted(official)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for fname, names in shards.items():
        safetensors_torch.save_file({k: official[k] for k in names}, str(official_dir / fname))
        weight_map.update({k: fname for k in names})
    with open(official_dir / "diffusion_pytorch_model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return {"diffusers": str(diffusers_dir), "official": str(official_dir), "state": state}


def _inputs(config, frames=3, height=4, width=6, seed=0):
    rng = np.random.default_rng(seed)
    m = config.model
    latents = rng.standard_normal((1, frames, height, width, m.in_channels)).astype(np.float32)
    tokens_per_frame = (height // 2) * (width // 2)
    t = np.repeat(np.array([0.0] + [637.0] * (frames - 1), np.float32), tokens_per_frame)[None]  # frame 0 at t = 0
    context = rng.standard_normal((1, m.text_len, m.text_dim)).astype(np.float32)
    return latents, t, context


def _reference(torch_model, latents, t, context):
    with torch.no_grad():
        out = torch_model(
            torch.from_numpy(latents).permute(0, 4, 1, 2, 3),
            torch.from_numpy(t),
            torch.from_numpy(context),
            return_dict=False,
        )[0]
    return out.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_parity_with_diffusers(config, torch_model, checkpoints, layout):
    params = convert_checkpoint(checkpoints[layout], config, progress=False)
    model = dit.build_model(config)
    latents, t, context = _inputs(config)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(latents), jnp.asarray(t), jnp.asarray(context)))
    ref = _reference(torch_model, latents, t, context)
    err = np.abs(ours - ref).max()
    assert err <= 1e-4 * np.abs(ref).max(), f"max abs diff {err} vs max |ref| {np.abs(ref).max()}"


def test_in_context_mode_matches_diffusers_on_the_assembled_sequence(config, torch_model, checkpoints):
    """[reference, garment, video] at RoPE frames 0, 1, 2.., conditions at t = 0, output = video frames."""
    params = convert_checkpoint(checkpoints["diffusers"], config, progress=False)
    model = dit.build_model(config)
    rng = np.random.default_rng(1)
    shape = (1, 1, 4, 6, config.model.in_channels)
    ref_lat, garment = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    video, _, context = _inputs(config, frames=3, seed=2)
    ours = dit.in_context_forward(model, params, ref_lat, garment, video, jnp.array([400.0]), context)
    full = np.concatenate([ref_lat, garment, video], axis=1)
    t = np.repeat(np.array([0.0, 0.0, 400.0, 400.0, 400.0], np.float32), 6)[None]
    expected = _reference(torch_model, full, t, context)[:, 2:]
    assert ours.shape == video.shape
    err = np.abs(np.asarray(ours) - expected).max()
    assert err <= 1e-4 * np.abs(expected).max()


def test_per_frame_timesteps_equal_per_token(config, checkpoints):
    params = convert_checkpoint(checkpoints["diffusers"], config, progress=False)
    model = dit.build_model(config)
    latents, t_tok, context = _inputs(config)
    t_frame = t_tok.reshape(1, 3, 6)[:, :, 0]
    a = model.apply({"params": params}, latents, t_tok, context)
    b = model.apply({"params": params}, latents, t_frame, context)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_real_config_has_exactly_the_published_parameter_count():
    model = dit.build_model(load_config("wan22_ti2v_5b"))
    shapes = dit.abstract_params(model)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 4_999_787_712


def test_converted_checkpoint_roundtrips_through_orbax(config, checkpoints, tmp_path):
    from fc_jax.convert.__main__ import main

    dst = tmp_path / "params"
    main(["dit", "--src", checkpoints["official"], "--dst", str(dst), "--config", "configs/tiny.py"])
    loaded = load_dit_params(str(dst), config)
    direct = convert_checkpoint(checkpoints["official"], config, progress=False)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------------------------
# Bad input gets errors that name the problem.


def _write(state, path):
    os.makedirs(path, exist_ok=True)
    safetensors_torch.save_file(state, os.path.join(path, "diffusion_pytorch_model.safetensors"))
    return path


def test_missing_extra_and_misshaped_tensors_are_named(config, checkpoints, tmp_path):
    state = dict(checkpoints["state"])
    del state["blocks.1.attn2.to_k.bias"]
    state["blocks.0.surprise.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(_write(state, str(tmp_path / "a")), config, progress=False)
    assert "blocks.1.attn2.to_k.bias" in str(err.value) and "blocks.0.surprise.weight" in str(err.value)

    state = dict(checkpoints["state"])
    state["blocks.0.ffn.net.2.weight"] = torch.zeros(5, 7)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.net\.2\.weight"):
        convert_checkpoint(_write(state, str(tmp_path / "b")), config, progress=False)


def test_unknown_checkpoint_is_rejected(config, tmp_path):
    with pytest.raises(CheckpointError, match="not a Wan DiT checkpoint"):
        convert_checkpoint(_write({"foo.weight": torch.zeros(2)}, str(tmp_path / "c")), config, progress=False)


def test_bad_latents_are_named(config):
    model = dit.build_model(config)
    params = dit.init_params(model, jax.random.key(0))
    context = jnp.zeros((1, 4, config.model.text_dim))
    with pytest.raises(ValueError, match="16 channels; this model expects 48"):
        model.apply({"params": params}, jnp.zeros((1, 1, 4, 4, 16)), jnp.zeros((1,)), context)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model.apply({"params": params}, jnp.zeros((1, 1, 5, 4, 48)), jnp.zeros((1,)), context)
    with pytest.raises(ValueError, match="timesteps must be"):
        model.apply({"params": params}, jnp.zeros((1, 2, 4, 4, 48)), jnp.zeros((1, 3)), context)
    with pytest.raises(ValueError, match="RoPE positions exceed"):
        model.apply({"params": params}, jnp.zeros((1, 1, 4, 4, 48)), jnp.zeros((1,)), context, np.array([5000]))
