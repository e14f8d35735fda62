"""Stream a garment video: `python -m fc_jax.generate [--config=NAME[:VARIANT]] [--checkpoint=DIR] --reference=IMG
--garment=IMG [--switch=FRAME:IMG ...] --frames=N --output=video.mp4`.

`--config` is a packaged config (`tiny`, the default, or `wan22_ti2v_5b`) or a config file, with
`--config.a.b=value` overrides.

`--checkpoint=DIR` holds `dit/` and `vae/` (orbax folders written by `python -m fc_jax.convert`), and for the
prompt either `text_cache.npz` (an `fc_jax.text.EmbeddingCache` file holding the prompt) or `umt5/` plus
`--tokenizer`. Without `--checkpoint` the config's model runs with RANDOM weights and a random prompt embedding
(it says so), and without images it draws simple built-in ones: a smoke test of the whole path.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import flags
from PIL import Image, ImageDraw

import fc_jax.config
from fc_jax import cli
from fc_jax.inference import load_checkpoint
from fc_jax.sampling.streaming import StreamingSession, SwitchOptions, chunk_frame_counts

PROG = "python -m fc_jax.generate"

FLAGS = flags.FlagValues()  # private: importing fc_jax.generate defines no global flags
cli.DEFINE_config_file("config", "tiny", "model config: a packaged name (tiny, wan22_ti2v_5b) or a file", FLAGS,
                       resolve=fc_jax.config.config_file)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "folder with dit/, vae/ and text_cache.npz or umt5/",
                                  flag_values=FLAGS)
_REFERENCE = flags.DEFINE_string("reference", None, "image of the person", flag_values=FLAGS)
_GARMENT = flags.DEFINE_string("garment", None, "image of the garment", flag_values=FLAGS)
_SWITCH = flags.DEFINE_multi_string("switch", [], "FRAME:IMAGE — switch to this garment at this frame",
                                    flag_values=FLAGS)
_PROMPT = flags.DEFINE_string("prompt", "", "text prompt (with a checkpoint)", flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder (with umt5/)",
                                 flag_values=FLAGS)
_FRAMES = flags.DEFINE_integer("frames", 21, "video frames, 12k-3 (9, 21, 33, ..., 81, ...)", flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("output", "out/video.mp4", "mp4 to write (24 fps)", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "noise seed", flag_values=FLAGS)
_NO_REFRESH = flags.DEFINE_bool("no_refresh", False, "ablation: keep the old garment's K/V at a switch",
                                flag_values=FLAGS)
_NO_WITHDRAW = flags.DEFINE_bool("no_withdraw", False, "ablation: keep the history K/V at a switch",
                                 flag_values=FLAGS)
_NO_DISENTANGLE = flags.DEFINE_bool("no_disentangle", False, "ablation: keep the original reference at a switch",
                                    flag_values=FLAGS)
_KEEP = flags.DEFINE_integer("keep_frames", 0, "history latent frames kept at a switch (multiple of 3)",
                             flag_values=FLAGS)
_REBASE = flags.DEFINE_bool("rebase", False, "restart RoPE positions after a full withdraw", flag_values=FLAGS)

def parse_switches(specs: list[str]) -> dict[int, str]:
    """["40:shirt.png", ...] -> {40: "shirt.png"} with errors naming the bad item."""
    out = {}
    for spec in specs:
        frame, sep, path = spec.partition(":")
        if not sep or not frame.strip().isdigit() or not path:
            raise ValueError(f"--switch expects FRAME:IMAGE (e.g. 40:shirt.png); got {spec!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--switch {spec}: garment image not found: {path}")
        out[int(frame)] = path
    return out


def demo_images(height: int, width: int) -> tuple[Image.Image, Image.Image]:
    """A crude person-like figure and a red shirt, for the random-weight smoke run."""
    person = Image.new("RGB", (width, height), (200, 210, 220))
    d = ImageDraw.Draw(person)
    d.ellipse((width * 0.35, height * 0.05, width * 0.65, height * 0.22), fill=(230, 190, 160))
    d.rectangle((width * 0.3, height * 0.22, width * 0.7, height * 0.6), fill=(40, 60, 160))
    d.rectangle((width * 0.33, height * 0.6, width * 0.67, height * 0.95), fill=(50, 50, 50))
    shirt = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(shirt).rectangle((width * 0.2, height * 0.25, width * 0.8, height * 0.75), fill=(190, 30, 40))
    return person, shirt


def _load_weights(config, checkpoint: str | None, key):
    """(dit params, vae params, context [1, Lt, text_dim], random?)."""
    from fc_jax.models import dit, vae

    if checkpoint is None:
        model = dit.build_model(config)
        dit_params = dit.init_params(model, jax.random.fold_in(key, 1))
        vae_params = vae.init_params(config, jax.random.fold_in(key, 2))
        context = 0.1 * jax.random.normal(jax.random.fold_in(key, 3), (1, config.model.text_len, config.model.text_dim))
        return dit_params, vae_params, context, True

    dit_params, vae_params, texts = load_checkpoint(config, checkpoint, _TOKENIZER.value)
    embeddings, _ = texts([_PROMPT.value])
    return dit_params, vae_params, jnp.asarray(embeddings), False


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    from fc_jax.video import Mp4Writer

    config = FLAGS.config
    try:  # fail fast on an impossible length, a bad --switch or missing images
        chunk_frame_counts(_FRAMES.value, config.student.chunk_frames)
        switches = parse_switches(_SWITCH.value)
    except (ValueError, FileNotFoundError) as e:
        cli.fail(PROG, str(e))
    if _CHECKPOINT.value and (_REFERENCE.value is None or _GARMENT.value is None):
        cli.fail(PROG, "--reference and --garment are required with --checkpoint")
    key = jax.random.key(_SEED.value)
    dit_params, vae_params, context, random_weights = _load_weights(config, _CHECKPOINT.value, key)
    if random_weights:
        print(f"no --checkpoint: RANDOM weights of config '{config.name}' (a smoke test, not a real video)",
              file=sys.stderr)
    reference, garment = _REFERENCE.value, _GARMENT.value
    if reference is None or garment is None:  # (random weights: with --checkpoint both are required)
        person, shirt = demo_images(config.video.height, config.video.width)
        reference, garment = reference or person, garment or shirt
        print("no --reference/--garment: using built-in drawings", file=sys.stderr)

    options = SwitchOptions(not _NO_REFRESH.value, not _NO_WITHDRAW.value, not _NO_DISENTANGLE.value,
                            _KEEP.value, _REBASE.value)
    session = StreamingSession(config, dit_params, vae_params, context, seed=_SEED.value, switch=options)
    start = time.perf_counter()
    session.start(reference, garment)
    first_frame_s = None
    with Mp4Writer(_OUTPUT.value, fps=config.video.fps) as writer:
        for frames in session.stream(_FRAMES.value, switches):
            if first_frame_s is None:
                first_frame_s = time.perf_counter() - start
            writer.write(frames)
    total = time.perf_counter() - start
    print(json.dumps({
        "config": config.name, "random_weights": random_weights, "frames": writer.frames_written,
        "size": [config.video.height, config.video.width], "switches": sorted(switches),
        "seconds": round(total, 2), "first_frame_seconds": round(first_frame_s, 2),
        "fps_including_compile": round(writer.frames_written / total, 2), "output": _OUTPUT.value,
    }))


def run() -> None:
    """Console-script entry point (fc-jax-generate)."""
    main()


if __name__ == "__main__":
    run()
