"""`python -m fc_jax.convert {dit,vae,umt5} --src PATH --dst DIR [--config=configs/x.py]`.

Converts an official or Hugging Face checkpoint into an orbax checkpoint of the fc_jax parameter tree. Each
network's converter module (`fc_jax.convert.<name>`) provides `convert_checkpoint(src, config) -> params`.
"""

from __future__ import annotations

import argparse
import importlib
import runpy
import sys

NETWORKS = {
    "dit": "the Wan2.2 diffusion transformer (official sharded safetensors or a diffusers transformer/ folder)",
    "vae": "the Wan2.2 VAE (official Wan2.2_VAE.pth or a diffusers vae/ folder)",
    "umt5": "the umT5-XXL encoder (official models_t5_umt5-xxl-enc-bf16.pth or a transformers folder)",
}


def load_config(path: str):
    """`get_config()` of an ml_collections config file."""
    return runpy.run_path(path)["get_config"]()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fc_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("network", choices=sorted(NETWORKS), help="; ".join(f"{k}: {v}" for k, v in NETWORKS.items()))
    parser.add_argument("--src", required=True, help="checkpoint file or folder to read")
    parser.add_argument("--dst", required=True, help="new folder for the orbax checkpoint")
    parser.add_argument("--config", default="configs/wan22_ti2v_5b.py", help="model config (default: the 5B model)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"fc_jax.convert.{args.network}")
    from fc_jax.convert.common import save_params

    params = module.convert_checkpoint(args.src, load_config(args.config))
    save_params(params, args.dst)
    print(f"wrote {args.network} parameters from {args.src} to {args.dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
