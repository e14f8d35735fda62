"""`python -m fc_jax.convert {dit,vae,umt5} --src=PATH --dst=DIR [--config=configs/x.py]`.

Converts an official or Hugging Face checkpoint into an orbax checkpoint of the fc_jax parameter tree. Each
network's converter module (`fc_jax.convert.<name>`) provides `convert_checkpoint(src, config) -> params`.
`--config` is an ml_collections config file or a packaged config name (`NAME[:VARIANT]`, e.g. tiny;
`--config.FIELD=VALUE` overrides a field); `--src X` and `--src=X` are alike.
"""

from __future__ import annotations

import importlib
import runpy
import sys

from absl import flags

from fc_jax import cli
from fc_jax.config import config_file

PROG = "python -m fc_jax.convert"
NETWORKS = {
    "dit": "the Wan2.2 diffusion transformer (official sharded safetensors or a diffusers transformer/ folder)",
    "vae": "the Wan2.2 VAE (official Wan2.2_VAE.pth or a diffusers vae/ folder)",
    "umt5": "the umT5-XXL encoder (official models_t5_umt5-xxl-enc-bf16.pth or a transformers folder)",
}

FLAGS = flags.FlagValues()
flags.DEFINE_string("src", None, "checkpoint file or folder to read", flag_values=FLAGS)
flags.DEFINE_string("dst", None, "new folder for the orbax checkpoint", flag_values=FLAGS)
flags.mark_flags_as_required(["src", "dst"], flag_values=FLAGS)
cli.DEFINE_config_file("config", "configs/wan22_ti2v_5b.py", "model config (default: the 5B model)", FLAGS,
                       resolve=config_file)


def load_config(path: str):
    """`get_config()` of an ml_collections config file."""
    return runpy.run_path(path)["get_config"]()


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:]), NETWORK among them."""
    positional = "{" + ",".join(sorted(NETWORKS)) + "}"
    description = (__doc__.split("\n\n")[0] + " NETWORK: " + "; ".join(f"{k}: {v}" for k, v in NETWORKS.items()))
    rest = cli.parse(FLAGS, PROG, argv, description=description, positional=positional)
    if len(rest) != 1 or rest[0] not in NETWORKS:
        problem = f"invalid choice: {rest[0]!r}" if len(rest) == 1 else f"expected one NETWORK, got {rest}"
        cli.fail(PROG, f"argument network: {problem} (choose from {', '.join(sorted(NETWORKS))})", positional)
    network = rest[0]
    module = importlib.import_module(f"fc_jax.convert.{network}")
    from fc_jax.convert.common import save_params

    params = module.convert_checkpoint(FLAGS.src, FLAGS.config)
    save_params(params, FLAGS.dst)
    print(f"wrote {network} parameters from {FLAGS.src} to {FLAGS.dst}", file=sys.stderr)


def run() -> None:
    """Console-script entry point (fc-jax-convert)."""
    main()


if __name__ == "__main__":
    run()
