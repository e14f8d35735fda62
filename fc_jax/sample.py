"""Teacher sample: `python -m fc_jax.sample [--config=NAME[:VARIANT]] [--checkpoint=DIR] --output=out/sample.npz`.

Runs the in-context teacher (UniPC on `config.sampling.teacher_sigmas`, CFG with the negative prompt's embedding
in place of the text) on reference / garment latents and writes the clean video latents. The negative context is
the conditions file's `negative_context`, else `config.sampling.negative_embedding` (an .npy [n, text_dim], e.g.
the `negative_prompt.npy` preencode writes beside a latent data set). `--config` is a packaged config (`tiny`,
the default, or `wan22_ti2v_5b`) or a config file, with `--config.a.b=value` overrides. Without `--checkpoint` it
uses random weights of the chosen config and random condition latents, and says so: a smoke test of the whole
path, not a meaningful video.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import fc_jax.config
from fc_jax import cli
from fc_jax.models import dit
from fc_jax.sampling.teacher import sample_teacher

PROG = "python -m fc_jax.sample"

FLAGS = flags.FlagValues()  # private: importing fc_jax.sample defines no global flags
cli.DEFINE_config_file("config", "tiny", "model config: a packaged name (tiny, wan22_ti2v_5b) or a file", FLAGS,
                       resolve=fc_jax.config.config_file)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "DiT weights: fc_jax orbax folder, or official / diffusers",
                                  flag_values=FLAGS)
_CONDITIONS = flags.DEFINE_string(
    "conditions", None, "npz with `reference`, `garment` latents [1,1,h,w,48], `context` and optionally "
    "`negative_context` [1,L,D]",
    flag_values=FLAGS,
)
_OUTPUT = flags.DEFINE_string("output", "out/teacher_sample.npz", "where to write the latents (npz)",
                              flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "noise seed", flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", None, "UniPC steps (default: config.sampling.teacher_steps)",
                              flag_values=FLAGS)

def _random_conditions(config, key):
    """Random condition latents and text embeddings at the config's geometry (for the random-weight demo)."""
    h, w = config.video.height // 16, config.video.width // 16
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (1, 1, h, w, config.model.in_channels)
    context = jax.random.normal(k3, (1, config.model.text_len, config.model.text_dim)) * 0.1
    return {
        "reference": jax.random.normal(k1, shape),
        "garment": jax.random.normal(k2, shape),
        "context": context,
        "negative_context": jnp.zeros_like(context),  # random everything: a stand-in negative prompt
    }


def _negative_context(config, conditions: dict) -> np.ndarray:
    """[1, text_len, text_dim]: the conditions' `negative_context`, else `config.sampling.negative_embedding`."""
    if "negative_context" in conditions:
        return conditions["negative_context"]
    path = config.sampling.negative_embedding
    if not path:
        raise SystemExit(f"{PROG}: the teacher's guidance needs the embedding of config.sampling.negative_prompt: add "
                         "`negative_context` to --conditions or set --config.sampling.negative_embedding=FILE.npy "
                         "(e.g. the negative_prompt.npy that fc_jax.data.preencode writes beside a latent data set)")
    embedding = np.load(path, allow_pickle=False)
    n, dim = config.model.text_len, config.model.text_dim
    if embedding.ndim != 2 or embedding.shape[0] > n or embedding.shape[1] != dim:
        raise SystemExit(f"{PROG}: config.sampling.negative_embedding {path}: expected [<= {n}, {dim}], found "
                         f"{embedding.shape}")
    out = np.zeros((1, n, dim), np.float32)
    out[0, : embedding.shape[0]] = embedding
    return out


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    config = FLAGS.config
    model = dit.build_model(config)
    key = jax.random.key(_SEED.value)
    if _CHECKPOINT.value:
        from fc_jax.convert.dit import load_dit_params

        params = load_dit_params(_CHECKPOINT.value, config)
    else:
        print(f"no --checkpoint: using RANDOM weights of config '{config.name}' (a smoke test, not a video)",
              file=sys.stderr)
        params = jax.jit(lambda k: dit.init_params(model, k))(jax.random.fold_in(key, 1))
    if _CONDITIONS.value:
        conditions = dict(np.load(_CONDITIONS.value))
    else:
        print("no --conditions: using random reference / garment latents and text embeddings", file=sys.stderr)
        conditions = _random_conditions(config, jax.random.fold_in(key, 2))
    ref = jnp.asarray(conditions["reference"])
    frames = (config.video.num_frames - 1) // 4 + 1
    noise = jax.random.normal(jax.random.fold_in(key, 3), (ref.shape[0], frames) + ref.shape[2:])
    steps = _STEPS.value or config.sampling.teacher_steps

    start = time.perf_counter()
    latents = sample_teacher(
        model, params, ref, jnp.asarray(conditions["garment"]), noise,
        jnp.asarray(conditions["context"]), jnp.asarray(_negative_context(config, conditions)),
        num_steps=steps, shift=config.sampling.shift, guidance_scale=config.sampling.guidance_scale,
        sigma_grid=config.sampling.teacher_sigmas,
    )
    latents = np.asarray(jax.block_until_ready(latents))
    seconds = time.perf_counter() - start
    if not np.isfinite(latents).all():
        raise SystemExit("the sample contains NaN or Inf values; nothing written")
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    np.savez(_OUTPUT.value, latents=latents)
    print(json.dumps({
        "config": config.name, "random_weights": not _CHECKPOINT.value, "steps": steps,
        "latent_shape": list(latents.shape), "seconds": round(seconds, 2), "output": _OUTPUT.value,
    }))


def run() -> None:
    """Console-script entry point (fc-jax-sample)."""
    main()


if __name__ == "__main__":
    run()
