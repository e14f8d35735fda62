"""The Wan2.2 VAE: parity with diffusers' AutoencoderKLWan (Wan2.2 configuration, tiny widths, random weights)
through our converter from both checkpoint layouts, streaming = whole, input errors, and the real parameter count."""

import re

import jax
import numpy as np
import pytest
import torch

from configs import tiny, wan22_ti2v_5b
from fc_jax.convert.common import CheckpointError
from fc_jax.convert.vae import convert_checkpoint
from fc_jax.models import vae

CFG = tiny.get_config()  # the VAE at widths 16 / 16, z_dim 48, the real stage layout ...
CFG.vae.update(dict(encoder_res_blocks=1, decoder_res_blocks=2))  # ... with one residual block less per stage
B, F, H, W = 2, 25, 32, 48  # 25 frames -> 7 latent frames of 2 x 3 (non-square)
LATENT = (B, 7, 2, 3, 48)


def _diffusers_vae():
    """diffusers' Wan2.2 VAE at tiny widths with random weights everywhere (norm gains and biases included)."""
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(
        base_dim=16, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_spatial=16, scale_factor_temporal=4,
        latents_mean=vae.LATENTS_MEAN.tolist(), latents_std=vae.LATENTS_STD.tolist(),
    ).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p[0].numel()))
        # keep most decoded values inside (-1, 1) so that the output clamp hides no mismatch
        model.decoder.conv_out.weight.mul_(0.3)
    return model


# The inverse of diffusers' `convert_vae_22` (scripts/convert_wan_to_diffusers.py), which maps the module names
# of the official wan/modules/vae2_2.py onto AutoencoderKLWan. Written from that script, not from our converter.
_RESNET_PARTS = [(".norm1.gamma", ".residual.0.gamma"), (".conv1.", ".residual.2."),
                 (".norm2.gamma", ".residual.3.gamma"), (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut.")]
_STRUCTURE = [
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"\.mid_block\.resnets\.0\.", ".middle.0."),
    (r"\.mid_block\.attentions\.0\.", ".middle.1."),
    (r"\.mid_block\.resnets\.1\.", ".middle.2."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.downsamples.\1.downsamples.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsampler\.", r"encoder.downsamples.\1.downsamples.1."),  # after 1 resnet
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.upsamples.\1.upsamples.\2."),
    (r"^decoder\.up_blocks\.(\d+)\.upsampler\.", r"decoder.upsamples.\1.upsamples.2."),  # after 2 resnets
]


def _official_name(key: str) -> str:
    if ".resnets." in key:
        for old, new in _RESNET_PARTS:
            key = key.replace(old, new)
    for pattern, repl in _STRUCTURE:
        key = re.sub(pattern, repl, key)
    return key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The diffusers model saved in both layouts, and its outputs on a random video and random latents."""
    model = _diffusers_vae()
    root = tmp_path_factory.mktemp("vae")
    model.save_pretrained(root / "diffusers_vae")  # config.json + diffusion_pytorch_model.safetensors
    official = {_official_name(k): v for k, v in model.state_dict().items()}
    assert len(official) == len(model.state_dict())
    for key in ["encoder.conv1.weight", "encoder.downsamples.1.downsamples.0.shortcut.weight",
                "encoder.downsamples.1.downsamples.1.time_conv.weight", "encoder.middle.1.to_qkv.weight",
                "conv1.bias", "conv2.weight", "decoder.upsamples.0.upsamples.2.time_conv.weight",
                "decoder.upsamples.2.upsamples.0.residual.6.weight", "decoder.head.0.gamma"]:
        assert key in official, key
    torch.save(official, root / "Wan2.2_VAE.pth")

    rng = np.random.default_rng(0)
    video = rng.uniform(-1, 1, (B, F, H, W, 3)).astype(np.float32)
    latents = rng.normal(size=LATENT).astype(np.float32)  # normalised, as our API takes them
    with torch.no_grad():
        mu = model.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3))).latent_dist.mean.numpy()
        raw = latents * vae.LATENTS_STD + vae.LATENTS_MEAN  # diffusers decodes un-normalised latents
        frames = model.decode(torch.from_numpy(raw.transpose(0, 4, 1, 2, 3))).sample.numpy()
    return dict(
        paths={"diffusers": str(root / "diffusers_vae"), "official": str(root / "Wan2.2_VAE.pth")},
        video=video, latents=latents,
        encoded=(mu.transpose(0, 2, 3, 4, 1) - vae.LATENTS_MEAN) / vae.LATENTS_STD,
        decoded=frames.transpose(0, 2, 3, 4, 1),
    )


@pytest.fixture(scope="module")
def params(reference):
    return convert_checkpoint(reference["paths"]["diffusers"], CFG)


def _close(ours, ref, rel):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    err, scale = np.abs(ours - ref).max(), np.abs(ref).max()
    assert err <= rel * scale, f"max error {err} > {rel} x {scale}"


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_parity_with_diffusers(reference, params, layout):
    p = convert_checkpoint(reference["paths"][layout], CFG)
    jax.tree.map(np.testing.assert_array_equal, p, params)  # both layouts give the same tree
    assert vae.VAEArch.from_params(p) == vae.VAEArch.from_config(CFG)

    latents = vae.encode_video(p, reference["video"])
    assert latents.shape == LATENT
    _close(latents, reference["encoded"], 1e-4)

    frames = vae.decode(p, reference["latents"])
    assert frames.shape == (B, F, H, W, 3)
    assert np.mean(np.abs(reference["decoded"]) >= 1.0) < 0.05  # the comparison is not hidden by the clamp
    _close(frames, reference["decoded"], 1e-4)


def test_encode_image_is_a_one_frame_video(reference, params):
    image_latents = vae.encode_image(params, reference["video"][:, 0])
    assert image_latents.shape == (B, 1, 2, 3, 48)
    _close(image_latents, reference["encoded"][:, :1], 1e-4)  # frame 0 is its own (causal) latent frame


@pytest.mark.parametrize("kernel_size, strides, padding", [
    ((3, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1))),  # CausalConv3d (time history concatenated before)
    ((3, 1, 1), (2, 1, 1), ((0, 0), (0, 0), (0, 0))),  # StridedTimeConv
    ((1, 1, 1), (1, 1, 1), ((0, 0), (0, 0), (0, 0))),  # quant convs, shortcuts
    ((2, 3, 3), (2, 2, 1), ((1, 2), (0, 1), (1, 1))),  # time padding and strides in every axis
])
def test_conv3d_by_time_taps_equals_a_3d_convolution(kernel_size, strides, padding):
    """The CPU path of the VAE's 3-d convolutions (per-frame 2-d convolutions summed over time taps) computes
    XLA's 3-d convolution."""
    kx, kk, kb = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 9, 10, 7, 5))
    kernel = jax.random.normal(kk, (*kernel_size, 5, 6))
    bias = jax.random.normal(kb, (6,))
    expected = jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                            dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + bias
    found = vae._conv3d_by_time_taps(x, kernel, bias, strides, padding)
    assert found.shape == expected.shape
    np.testing.assert_allclose(np.asarray(found), np.asarray(expected), rtol=1e-5, atol=1e-4)


def test_posterior_sample():
    mu = np.full((4096,), 0.5, np.float32)
    logvar = np.full((4096,), np.log(0.25), np.float32)  # std 0.5
    assert vae._posterior(mu, logvar, None) is mu
    sample = np.asarray(vae._posterior(mu, logvar, jax.random.key(0)))
    assert abs(sample.mean() - 0.5) < 0.05 and abs(sample.std() - 0.5) < 0.05


def test_streaming_decode_equals_whole(reference, params):
    z = reference["latents"]
    whole = vae.decode(params, z)
    cache = vae.init_decode_cache(CFG, B, 2, 3)
    assert not cache.started
    compiled = vae._decode_chunk_jit._cache_size()
    chunks = []
    for a, b in [(0, 1), (1, 4), (4, 7)]:
        frames, cache = vae.decode_chunk(params, cache, z[:, a:b])
        chunks.append(frames)
    assert [c.shape[1] for c in chunks] == [1, 12, 12]
    assert vae._decode_chunk_jit._cache_size() - compiled == 2  # the first chunk, and one 3-latent chunk
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, atol=1e-5, rtol=0)


def test_streaming_encode_equals_whole(reference, params):
    video = reference["video"]
    whole = vae.encode_video(params, video)
    cache = vae.init_encode_cache(CFG, B, H, W)
    compiled = vae._encode_chunk_jit._cache_size()
    chunks = []
    for a, b in [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range(6)]:
        latents, cache = vae.encode_chunk(params, cache, video[:, a:b])
        chunks.append(latents)
    assert [c.shape[1] for c in chunks] == [1] * 7
    assert vae._encode_chunk_jit._cache_size() - compiled == 2  # frame 0, and one 4-frame chunk
    _close(np.concatenate(chunks, axis=1), whole, 1e-5)


def test_bad_inputs_are_named(reference, params):
    video = reference["video"]
    with pytest.raises(ValueError, match=r"4k\+1.*found 24"):
        vae.encode_video(params, video[:, :24])
    with pytest.raises(ValueError, match=r"divisible by 16, found 40x48"):
        vae.encode_video(params, np.zeros((1, 5, 40, 48, 3), np.float32))
    with pytest.raises(ValueError, match=r"3 colour channels.*found 4"):
        vae.encode_image(params, np.zeros((1, 32, 32, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[-1, 1\], found values in \[0.0, 255.0\]"):
        vae.encode_image(params, np.linspace(0, 255, 32 * 32 * 3, dtype=np.float32).reshape(1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"48 latent channels.*found 16"):
        vae.decode(params, np.zeros((1, 2, 2, 3, 16), np.float32))
    cache = vae.init_decode_cache(CFG, B, 2, 3)
    with pytest.raises(ValueError, match=r"made for \(batch, height, width\) = \(2, 2, 3\), found \(2, 4, 3\)"):
        vae.decode_chunk(params, cache, np.zeros((B, 1, 4, 3, 48), np.float32))
    cache = vae.init_encode_cache(CFG, B, H, W)
    _, cache = vae.encode_chunk(params, cache, video[:, :1])
    with pytest.raises(ValueError, match=r"multiple of 4 frames, found 3"):
        vae.encode_chunk(params, cache, video[:, 1:4])


def test_bad_checkpoints_are_named(reference, tmp_path):
    state = torch.load(reference["paths"]["official"], weights_only=True)
    del state["decoder.upsamples.0.upsamples.2.time_conv.weight"]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["decoder.head.2.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(str(tmp_path / "broken.pth"), CFG)
    message = str(err.value)
    assert "decoder.upsamples.0.upsamples.2.time_conv.weight" in message
    assert "encoder.extra.weight" in message
    with pytest.raises(CheckpointError, match=r"decoder\.head\.2\.bias: shape \(5,\)"):
        del state["encoder.extra.weight"]
        state["decoder.upsamples.0.upsamples.2.time_conv.weight"] = torch.zeros(128, 64, 3, 1, 1)
        torch.save(state, tmp_path / "misshaped.pth")
        convert_checkpoint(str(tmp_path / "misshaped.pth"), CFG)
    with pytest.raises(CheckpointError, match=r"base_dim: expected 160, found 16"):
        convert_checkpoint(reference["paths"]["diffusers"], wan22_ti2v_5b.get_config())


def test_real_parameter_count():
    config = wan22_ti2v_5b.get_config()
    shapes = vae.abstract_params(config)  # shapes only, nothing allocated
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    assert count(shapes) == 704_688_668
    assert count(shapes["encoder"]) + count(shapes["quant_conv"]) == 149_637_088
    assert count(shapes["decoder"]) + count(shapes["post_quant_conv"]) == 555_051_580
    assert vae.VAEArch.from_params(shapes, config.vae.dtype) == vae.VAEArch.from_config(config)
