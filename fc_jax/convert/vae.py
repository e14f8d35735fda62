"""Wan2.2 VAE checkpoint -> fc_jax parameters (`fc_jax.models.vae`).

Reads either layout, detected from the keys:
- official: `Wan2.2_VAE.pth` of Wan-AI/Wan2.2-TI2V-5B (module names of `wan/modules/vae2_2.py`:
  `encoder.downsamples.{i}.downsamples.{j}.residual.{0,2,3,6}`, `middle.{0,1,2}`, `head.{0,2}`, `conv1`, `conv2`);
- diffusers: a `vae/` folder of `AutoencoderKLWan` (safetensors; `down_blocks.{i}.resnets.{j}.conv1`, `mid_block`,
  `norm_out`, `quant_conv`, ...).
Our parameter tree mirrors the diffusers module names (`down_blocks_0/resnets_1/conv1/kernel`), channels-last.

    python -m fc_jax.convert vae --src Wan2.2_VAE.pth --dst ckpt/vae --config=configs/wan22_ti2v_5b.py
"""

from __future__ import annotations

import json
import os

import numpy as np

from fc_jax.convert.common import CheckpointError, Rule, conv, convert, identity, linear, open_tensors
from fc_jax.models.vae import VAEArch, abstract_params

Path = tuple[str, ...]
# (our module path, diffusers key prefix, official key prefix, kind); kind is "conv", "norm" or "dense".
Layer = tuple[Path, str, str, str]


def _flat(x: np.ndarray) -> np.ndarray:
    """RMS_norm gamma [C, 1, 1(, 1)] -> [C]."""
    return x.reshape(-1)


def _dense_from_1x1(x: np.ndarray) -> np.ndarray:
    """Conv2d 1x1 weight [out, in, 1, 1] -> Dense kernel [in, out]."""
    return linear(x.reshape(x.shape[0], -1))


_PARAMS = {  # kind -> [(our leaf, source suffix, transform)]
    "conv": [("kernel", "weight", conv), ("bias", "bias", identity)],
    "dense": [("kernel", "weight", _dense_from_1x1), ("bias", "bias", identity)],
    "norm": [("gamma", "gamma", _flat)],
}


def _resnet(path: Path, diffusers: str, official: str, shortcut: bool) -> list[Layer]:
    layers = [
        (path + ("norm1",), f"{diffusers}.norm1", f"{official}.residual.0", "norm"),
        (path + ("conv1",), f"{diffusers}.conv1", f"{official}.residual.2", "conv"),
        (path + ("norm2",), f"{diffusers}.norm2", f"{official}.residual.3", "norm"),
        (path + ("conv2",), f"{diffusers}.conv2", f"{official}.residual.6", "conv"),
    ]
    if shortcut:
        layers.append((path + ("conv_shortcut",), f"{diffusers}.conv_shortcut", f"{official}.shortcut", "conv"))
    return layers


def _mid(path: Path, diffusers: str, official: str) -> list[Layer]:
    attn, attn_d, attn_o = path + ("attentions_0",), f"{diffusers}.attentions.0", f"{official}.1"
    return [
        *_resnet(path + ("resnets_0",), f"{diffusers}.resnets.0", f"{official}.0", False),
        (attn + ("norm",), f"{attn_d}.norm", f"{attn_o}.norm", "norm"),
        (attn + ("to_qkv",), f"{attn_d}.to_qkv", f"{attn_o}.to_qkv", "dense"),
        (attn + ("proj",), f"{attn_d}.proj", f"{attn_o}.proj", "dense"),
        *_resnet(path + ("resnets_1",), f"{diffusers}.resnets.1", f"{official}.2", False),
    ]


def _stage(path: Path, diffusers: str, official: str, in_dim: int, out_dim: int, res_blocks: int,
           sampler: str, resample: bool, temporal: bool) -> list[Layer]:
    """One encoder/decoder stage: residual blocks, then the optional (down|up)sampler after them."""
    layers = []
    for j in range(res_blocks):
        layers += _resnet(path + (f"resnets_{j}",), f"{diffusers}.resnets.{j}",
                          f"{official}.{j}", j == 0 and in_dim != out_dim)
    if resample:
        names = ["resample"] + (["time_conv"] if temporal else [])
        for name in names:
            suffix = "resample.1" if name == "resample" else name
            layers.append((path + (sampler, name), f"{diffusers}.{sampler}.{suffix}",
                           f"{official}.{res_blocks}.{suffix}", "conv"))
    return layers


def layers(arch: VAEArch) -> list[Layer]:
    """Every parameterised layer of the VAE with its diffusers and official names."""
    stages = len(arch.dim_mult)
    enc = [arch.encoder_dim * m for m in (1, *arch.dim_mult)]
    dec = [arch.decoder_dim * m for m in (arch.dim_mult[-1], *arch.dim_mult[::-1])]
    t_up = arch.temporal_downsample[::-1]
    out: list[Layer] = [(("encoder", "conv_in"), "encoder.conv_in", "encoder.conv1", "conv")]
    for i in range(stages):
        last = i == stages - 1
        out += _stage(("encoder", f"down_blocks_{i}"), f"encoder.down_blocks.{i}",
                      f"encoder.downsamples.{i}.downsamples", enc[i], enc[i + 1], arch.encoder_res_blocks,
                      "downsampler", not last, not last and arch.temporal_downsample[i])
    out += _mid(("encoder", "mid_block"), "encoder.mid_block", "encoder.middle")
    out += [
        (("encoder", "norm_out"), "encoder.norm_out", "encoder.head.0", "norm"),
        (("encoder", "conv_out"), "encoder.conv_out", "encoder.head.2", "conv"),
        (("quant_conv",), "quant_conv", "conv1", "conv"),
        (("post_quant_conv",), "post_quant_conv", "conv2", "conv"),
        (("decoder", "conv_in"), "decoder.conv_in", "decoder.conv1", "conv"),
    ]
    out += _mid(("decoder", "mid_block"), "decoder.mid_block", "decoder.middle")
    for i in range(stages):
        last = i == stages - 1
        out += _stage(("decoder", f"up_blocks_{i}"), f"decoder.up_blocks.{i}", f"decoder.upsamples.{i}.upsamples",
                      dec[i], dec[i + 1], arch.decoder_res_blocks, "upsampler", not last, not last and t_up[i])
    out += [
        (("decoder", "norm_out"), "decoder.norm_out", "decoder.head.0", "norm"),
        (("decoder", "conv_out"), "decoder.conv_out", "decoder.head.2", "conv"),
    ]
    return out


def rules(arch: VAEArch, layout: str) -> list[Rule]:
    """The key map for `layout` ("official" or "diffusers")."""
    column = {"diffusers": 1, "official": 2}[layout]
    return [
        Rule(layer[0] + (leaf,), f"{layer[column]}.{suffix}", transform)
        for layer in layers(arch)
        for leaf, suffix, transform in _PARAMS[layer[3]]
    ]


def detect_layout(keys: set[str], arch: VAEArch) -> str:
    """"official" or "diffusers": whichever layout's key names the checkpoint shares more of."""
    overlap = {layout: len(keys & {r.source for r in rules(arch, layout)}) for layout in ("official", "diffusers")}
    if not any(overlap.values()):
        shown = ", ".join(sorted(keys)[:5])
        raise CheckpointError(
            "not a Wan2.2 VAE checkpoint: expected keys such as 'encoder.conv1.weight' (official Wan2.2_VAE.pth) "
            f"or 'encoder.conv_in.weight' (diffusers vae/), found {len(keys)} keys like {shown}"
        )
    return max(overlap, key=overlap.get)


def _check_diffusers_config(src: str, arch: VAEArch) -> None:
    """A diffusers folder's config.json must describe the VAE of our config."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        cfg = json.load(f)
    want = {
        "base_dim": arch.encoder_dim,
        "decoder_base_dim": arch.decoder_dim,
        "z_dim": arch.z_dim,
        "dim_mult": list(arch.dim_mult),
        "num_res_blocks": arch.encoder_res_blocks,
        "temperal_downsample": list(arch.temporal_downsample),
        "is_residual": True,
        "patch_size": arch.patch_size,
    }
    wrong = [f"{k}: expected {v}, found {cfg.get(k)}" for k, v in want.items() if k in cfg and cfg[k] != v]
    if arch.decoder_res_blocks != arch.encoder_res_blocks + 1:
        wrong.append(f"decoder_res_blocks must be num_res_blocks + 1 = {arch.encoder_res_blocks + 1} in diffusers, "
                     f"our config has {arch.decoder_res_blocks}")
    if wrong:
        raise CheckpointError(f"{path} describes a different VAE than the config: " + "; ".join(wrong))


def convert_checkpoint(src: str, config) -> dict:
    """Read an official `Wan2.2_VAE.pth` or a diffusers `vae/` folder into the parameter tree of `config.vae`.

    Raises `CheckpointError` naming every missing, unexpected or mis-shaped tensor.
    """
    arch = VAEArch.from_config(config)
    if os.path.isdir(src):
        _check_diffusers_config(src, arch)
    reader = open_tensors(src)
    layout = detect_layout(set(reader.keys()), arch)
    return convert(reader, rules(arch, layout), abstract_params(config))
