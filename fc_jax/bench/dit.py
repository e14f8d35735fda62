"""`python -m fc_jax.bench dit [--dim=1024 --layers=2 --frames=4 --size=H,W --backend=xla --repeats=5]`: our WanDiT
forward vs diffusers' WanTransformer3DModel, same weights and inputs, fp32, CPU, one process, alternating runs.
Mid-sized config so matmuls dominate (not dispatch overhead). `--size` is a comma list: `--size=32,32`."""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import emit, median_ms
from fc_jax.config import load_config
from fc_jax.convert.dit import convert_checkpoint
from fc_jax.models import dit


def _config(args) -> ml_collections.ConfigDict:
    config = load_config("tiny")
    config.model.update(
        dict(dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128, num_layers=args.layers,
             text_dim=512, text_len=64)
    )
    config.model.attention.backend = args.backend
    return config


FLAGS = flags.FlagValues()
flags.DEFINE_integer("dim", 1024, "model width (heads = dim / 128, ffn = 4 dim)", flag_values=FLAGS)
flags.DEFINE_integer("layers", 2, "transformer blocks", flag_values=FLAGS)
flags.DEFINE_integer("frames", 4, "latent frames", flag_values=FLAGS)
cli.DEFINE_integers("size", (32, 32), "latent H,W", FLAGS, count=2)
flags.DEFINE_string("backend", "xla", "our attention backend", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 5, "timed calls per side and round (median)", flag_values=FLAGS)


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after `python -m fc_jax.bench dit`."""
    cli.parse(FLAGS, "python -m fc_jax.bench dit", argv, description=__doc__.split("\n\n")[0])
    args = FLAGS

    import diffusers
    import torch
    from safetensors.torch import save_file

    config = _config(args)
    m = config.model
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=tuple(m.patch_size), num_attention_heads=m.num_heads, attention_head_dim=m.dim // m.num_heads,
        in_channels=m.in_channels, out_channels=m.out_channels, text_dim=m.text_dim, freq_dim=m.freq_dim,
        ffn_dim=m.ffn_dim, num_layers=m.num_layers, cross_attn_norm=True, eps=m.eps,
    ).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, os.path.join(tmp, "model.safetensors"))
        params = jax.device_put(convert_checkpoint(tmp, config, progress=False))
    model = dit.build_model(config)

    h, w = args.size
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, args.frames, h, w, m.in_channels)).astype(np.float32)
    t = np.full((1, args.frames), 500.0, np.float32)
    context = rng.standard_normal((1, m.text_len, m.text_dim)).astype(np.float32)

    forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
    x_j, t_j, c_j = jnp.asarray(latents), jnp.asarray(t), jnp.asarray(context)
    x_t = torch.from_numpy(latents).permute(0, 4, 1, 2, 3).contiguous()
    tokens = args.frames * (h // 2) * (w // 2)
    t_t = torch.from_numpy(np.repeat(t, tokens // args.frames, axis=1))
    c_t = torch.from_numpy(context)

    def ours():
        return forward(params, x_j, t_j, c_j)

    def theirs():
        with torch.inference_mode():
            return ref(x_t, t_t, c_t, return_dict=False)[0]

    diff = np.abs(np.asarray(ours()) - theirs().permute(0, 2, 3, 4, 1).numpy()).max()
    ours_times, theirs_times = [], []
    for _ in range(2):  # alternate, so background load hits both sides alike
        ours_times.append(median_ms(ours, repeats=args.repeats))
        theirs_times.append(median_ms(theirs, repeats=args.repeats, warmup=1))
    ours_ms, theirs_ms = min(ours_times), min(theirs_times)
    emit({
        "benchmark": "dit_forward_cpu_fp32",
        "config": {"dim": m.dim, "heads": m.num_heads, "ffn": m.ffn_dim, "layers": m.num_layers,
                   "tokens": tokens, "text_len": m.text_len, "backend": args.backend},
        "ours_ms": round(ours_ms, 2),
        "diffusers_ms": round(theirs_ms, 2),
        "speedup": round(theirs_ms / ours_ms, 3),
        "max_abs_diff": float(diff),
        "torch_threads": torch.get_num_threads(),
        "jax_backend": jax.default_backend(),
    })
