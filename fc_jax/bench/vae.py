"""`python -m fc_jax.bench vae [--small_config=configs/tiny.py --config=configs/wan22_ti2v_5b.py --height=128
--width=128 --frames=17 --repeats=3]`: VAE speed at a small config, and the compiled memory of one real-size
streaming decode step.

Prints one JSON object:
- `encode_ms_per_frame`: whole-video `encode_video` at `--small_config` (median after a warm-up call);
- `decode_ms_per_frame`: streaming `decode_chunk` of 3-latent chunks (12 frames each) at `--small_config`, steady
  state (median after the first chunk and a warm-up chunk);
- `decode_chunk_peak_bytes_1280x704`: peak memory (arguments + outputs + temporaries - donated aliases) of one
  3-latent `decode_chunk` at 1280x704 (latent 80x44) with the real widths and dtypes of `--config`, from an
  ahead-of-time compile on abstract shapes (nothing is allocated) for this machine's backend, with its parts;
- `vae_params`: the parameter count of `--config`'s VAE (from shapes only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import compiled_memory, emit, median_ms
from fc_jax.config import config_file
from fc_jax.models import vae

FLAGS = flags.FlagValues()
cli.DEFINE_config_file("small_config", "configs/tiny.py", "config timed on this machine", FLAGS,
                       resolve=config_file)
cli.DEFINE_config_file("config", "configs/wan22_ti2v_5b.py", "config of the memory figure", FLAGS,
                       resolve=config_file)
flags.DEFINE_integer("height", 128, "pixels, for the timings", flag_values=FLAGS)
flags.DEFINE_integer("width", 128, "pixels, for the timings", flag_values=FLAGS)
flags.DEFINE_integer("frames", 17, "frames encoded (4k+1), for the timings", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 3, "timed calls (median)", flag_values=FLAGS)


def speed(config, height: int, width: int, frames: int, repeats: int) -> dict:
    """Milliseconds per video frame of encode and of steady-state streaming decode at `config` (random weights)."""
    params = vae.init_params(config, jax.random.key(0))
    video = jax.random.uniform(jax.random.key(1), (1, frames, height, width, 3), minval=-1.0, maxval=1.0)
    encode_ms = median_ms(lambda: vae.encode_video(params, video), repeats=repeats)

    latents = jax.random.normal(jax.random.key(2), (1, 3, height // 16, width // 16, config.vae.z_dim))
    state = {"cache": vae.init_decode_cache(config, 1, height // 16, width // 16)}
    _, state["cache"] = vae.decode_chunk(params, state["cache"], latents[:, :1])

    def next_chunk():
        out, state["cache"] = vae.decode_chunk(params, state["cache"], latents)
        return out

    decode_ms = median_ms(next_chunk, repeats=repeats)
    return {
        "encode_ms_per_frame": encode_ms / frames,
        "decode_ms_per_frame": decode_ms / (4 * latents.shape[1]),
        "small_config": {
            "name": config.name, "encoder_dim": config.vae.encoder_dim, "decoder_dim": config.vae.decoder_dim,
            "dtype": str(config.vae.dtype), "height": height, "width": width, "encode_frames": frames,
        },
    }


def decode_chunk_memory(config, height: int = 1280, width: int = 704) -> dict:
    """Compiled memory of one 3-latent streaming decode step at `height` x `width` (abstract shapes only)."""
    params = vae.abstract_params(config)
    h, w = height // 16, width // 16
    cache = jax.eval_shape(lambda: vae.init_decode_cache(config, 1, h, w)).replace(started=True)
    latents = jax.ShapeDtypeStruct((1, 3, h, w, config.vae.z_dim), jnp.float32)
    memory = compiled_memory(vae.decode_chunk, params, cache, latents, donate_argnums=1)
    return {
        f"decode_chunk_peak_bytes_{height}x{width}": memory.pop("peak_bytes"),
        "decode_chunk_memory": {**memory, "dtype": str(config.vae.dtype), "compiled_for": jax.default_backend()},
        "vae_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
    }


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after `python -m fc_jax.bench vae` (default: sys.argv[1:])."""
    cli.parse(FLAGS, "python -m fc_jax.bench vae", argv, description=__doc__.split("\n\n")[0])
    result = speed(FLAGS.small_config, FLAGS.height, FLAGS.width, FLAGS.frames, FLAGS.repeats)
    result.update(decode_chunk_memory(FLAGS.config))
    emit(result)


if __name__ == "__main__":
    main()
