"""Stream a garment video: `python -m fc_jax.generate [--config=NAME[:VARIANT]] [--checkpoint=DIR] --reference=IMG
--garment=IMG [--switch=FRAME:IMG[,FRAME:IMG...] ...] --frames=N --output=video.mp4`.

`--config` is a packaged config (`tiny`, the default, or `wan22_ti2v_5b`) or a config file, with
`--config.a.b=value` overrides.

`--checkpoint=DIR` holds `dit/` and `vae/` (orbax folders written by `python -m fc_jax.convert`, or by
`python -m fc_jax.export ... --vae=...` from a training run), and for the prompt either `text_cache.npz` (an
`fc_jax.text.EmbeddingCache` file holding the prompt) or `umt5/` plus `--tokenizer`. Without `--checkpoint` the
config's model runs with RANDOM weights and a random prompt embedding (it says so), and without images it draws
simple built-in ones: a smoke test of the whole path.

Every input is checked before any weights are built: the frame count (12k - 3: 9, 21, 33, ...), the images
(readable, at least 32x32 pixels), the switches (`--switch` repeatable, and comma-separated), the switch ablation
flags, the output path, and the checkpoint against the config (the shapes of dit/ and vae/, the prompt). An input
error is one line and exit status 2 (`--debug` adds its traceback). The stream runs as long as asked; if it stops
early (Ctrl-C: exit status 130, SIGTERM: 143, or an error) the frames made so far are kept as a finished mp4,
`video.partial.mp4` for `--output=video.mp4`, named in the message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

from absl import flags
from PIL import Image, ImageDraw

import fc_jax.config
from fc_jax import cli
from fc_jax.inputs import check_image, check_writable
from fc_jax.sampling.frames import chunk_count, switch_chunks

PROG = "python -m fc_jax.generate"
WEIGHTS_LINE = "building the weights"  # printed (stderr) once every input check has passed

FLAGS = flags.FlagValues()  # private: importing fc_jax.generate defines no global flags
cli.DEFINE_config_file("config", "tiny", "model config: a packaged name (tiny, wan22_ti2v_5b) or a file", FLAGS,
                       resolve=fc_jax.config.config_file)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "folder with dit/, vae/ and text_cache.npz or umt5/",
                                  flag_values=FLAGS)
_REFERENCE = flags.DEFINE_string("reference", None, "image of the person", flag_values=FLAGS)
_GARMENT = flags.DEFINE_string("garment", None, "image of the garment", flag_values=FLAGS)
_SWITCH = flags.DEFINE_multi_string("switch", [], "FRAME:IMAGE — switch to this garment at this frame; repeat the "
                                    "flag or separate items with commas (--switch=9:a.png,15:b.png)",
                                    flag_values=FLAGS)
_PROMPT = flags.DEFINE_string("prompt", "", "text prompt (with a checkpoint)", flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder (with umt5/)",
                                 flag_values=FLAGS)
_FRAMES = flags.DEFINE_integer("frames", 21, "video frames, 12k-3 (9, 21, 33, ..., 81, ...)", flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("output", "out/video.mp4", "mp4 to write (24 fps)", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "noise seed", flag_values=FLAGS)
_DECODER = flags.DEFINE_enum("decoder", "vae", ["vae", "light"], "latents to frames: the VAE's streaming decoder, "
                             "or the light decoder (fc_jax.models.light_decoder; with --checkpoint, its "
                             "light_decoder/ folder)", flag_values=FLAGS)
_NO_REFRESH = flags.DEFINE_bool("no_refresh", False, "ablation: keep the old garment's K/V at a switch",
                                flag_values=FLAGS)
_NO_WITHDRAW = flags.DEFINE_bool("no_withdraw", False, "ablation: keep the history K/V at a switch",
                                 flag_values=FLAGS)
_NO_DISENTANGLE = flags.DEFINE_bool("no_disentangle", False, "ablation: keep the original reference at a switch",
                                    flag_values=FLAGS)
_KEEP = flags.DEFINE_integer("keep_frames", 0, "history latent frames kept at a switch (multiple of 3)",
                             flag_values=FLAGS)
_REBASE = flags.DEFINE_bool("rebase", False, "restart RoPE positions after a full withdraw", flag_values=FLAGS)
_DEBUG = cli.DEFINE_debug(FLAGS)


def parse_switches(specs: list[str]) -> dict[int, str]:
    """["9:a.png,15:b.png", "30:c.png"] -> {9: "a.png", 15: "b.png", 30: "c.png"}. A comma followed by FRAME:
    starts a new item (so an image name may hold other commas); ValueError naming the bad item."""
    out: dict[int, str] = {}
    for spec in specs:
        for item in re.split(r",(?=\s*\d+:)", spec):
            frame, sep, path = item.strip().partition(":")
            if not sep or not frame.isdigit() or not path:
                raise ValueError(f"--switch={spec}: expected FRAME:IMAGE items (e.g. --switch=40:shirt.png or "
                                 f"--switch=40:shirt.png,60:coat.png); got {item!r}")
            if int(frame) in out:
                raise ValueError(f"--switch: frame {frame} is given twice ({out[int(frame)]} and {path})")
            out[int(frame)] = path
    return out


def _check_image(flag: str, path: str) -> None:
    try:
        check_image(path)
    except (OSError, ValueError) as e:
        raise cli.UserError(f"{flag}: {e}") from e


def check_inputs(config) -> dict[int, str]:
    """Every check that needs no weights, the cheap ones (no jax) first; UserError naming the flag. Returns the
    switches {frame: image}."""
    frames, chunk_frames = _FRAMES.value, config.student.chunk_frames
    try:
        chunk_count(frames, chunk_frames)
    except ValueError as e:
        raise cli.UserError(f"--frames={frames}: {e}") from e
    if _CHECKPOINT.value and (_REFERENCE.value is None or _GARMENT.value is None):
        raise cli.UserError("--checkpoint needs --reference and --garment (the person's and the garment's images)")
    if _DECODER.value == "light" and _CHECKPOINT.value and not os.path.isdir(
            os.path.join(_CHECKPOINT.value, "light_decoder")):
        raise cli.UserError(f"--decoder=light: --checkpoint={_CHECKPOINT.value} has no light_decoder/ folder (export "
                            "one from a light_decoder training run with python -m fc_jax.export)")
    for flag, path in (("--reference", _REFERENCE.value), ("--garment", _GARMENT.value)):
        if path is not None:
            _check_image(flag, path)
    try:
        switches = parse_switches(_SWITCH.value)
    except ValueError as e:
        raise cli.UserError(str(e)) from e
    try:
        switch_chunks(switches, frames, chunk_frames)
    except ValueError as e:
        raise cli.UserError(f"--switch: {e}") from e
    for frame, path in switches.items():
        _check_image(f"--switch={frame}:{path}", path)
    if _REBASE.value and _NO_WITHDRAW.value:
        raise cli.UserError("--rebase restarts RoPE positions after the history is withdrawn; it cannot go with "
                            "--no_withdraw")
    try:
        check_writable(_OUTPUT.value)
    except ValueError as e:
        raise cli.UserError(f"--output: {e}") from e
    from fc_jax.inference import check_checkpoint, checkpoint_parts

    try:
        if _CHECKPOINT.value:
            checkpoint_parts(_CHECKPOINT.value, _TOKENIZER.value)  # its folders, before jax is imported
        _check_switch_options(config)
        if _CHECKPOINT.value:
            check_checkpoint(config, _CHECKPOINT.value, _TOKENIZER.value, [_PROMPT.value])
    except (OSError, ValueError) as e:
        raise cli.UserError(str(e)) from e
    return switches


def _check_switch_options(config) -> None:
    """--keep_frames / --rebase against the config's cache, by the cache's own rules (on abstract shapes);
    ValueError naming them."""
    import jax

    from fc_jax import kv_cache
    from fc_jax.models import dit

    spec = kv_cache.CacheSpec.from_config(config, config.video.height // 16, config.video.width // 16)
    empty = lambda: kv_cache.init_cache(dit.build_model(config), spec, 1, 1, 1)
    try:
        jax.eval_shape(lambda: kv_cache.withdraw_history(empty(), _KEEP.value, _REBASE.value))
    except ValueError as e:
        raise ValueError(f"--keep_frames={_KEEP.value}{' --rebase' if _REBASE.value else ''}: {e}") from e


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
    import jax
    import jax.numpy as jnp

    from fc_jax.inference import load_checkpoint
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


def _light_decoder_params(checkpoint: str | None, key):
    """The light decoder's parameters: CHECKPOINT/light_decoder/, or random ones of the default architecture."""
    import jax

    from fc_jax.convert.common import load_params
    from fc_jax.models import light_decoder

    if checkpoint is None:
        return light_decoder.init_params(light_decoder.LightDecoderArch(), jax.random.fold_in(key, 4))
    return load_params(os.path.abspath(os.path.join(checkpoint, "light_decoder")))


def _stream(config, switches: dict[int, str]) -> dict:
    """Build the weights and the session, stream into the output; the JSON summary."""
    import jax

    from fc_jax.sampling.streaming import StreamingSession, SwitchOptions
    from fc_jax.video import Mp4Writer

    print(f"{WEIGHTS_LINE}: {'RANDOM (no --checkpoint)' if _CHECKPOINT.value is None else _CHECKPOINT.value}",
          file=sys.stderr, flush=True)
    dit_params, vae_params, context, random_weights = _load_weights(config, _CHECKPOINT.value,
                                                                    jax.random.key(_SEED.value))
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
    light = None
    if _DECODER.value == "light":
        light = _light_decoder_params(_CHECKPOINT.value, jax.random.key(_SEED.value))
    session = StreamingSession(config, dit_params, vae_params, context, seed=_SEED.value, switch=options,
                               decoder=_DECODER.value, light_decoder_params=light)
    start = time.perf_counter()
    session.start(reference, garment)
    print(f"streaming {_FRAMES.value} frames to {_OUTPUT.value} (the first chunk compiles the student's steps) ...",
          file=sys.stderr, flush=True)
    first_frame_s = None
    writer = Mp4Writer(_OUTPUT.value, fps=config.video.fps, keep_partial=True)
    try:
        with writer:
            for frames in session.stream(_FRAMES.value, switches):
                if first_frame_s is None:
                    first_frame_s = time.perf_counter() - start
                writer.write(frames)
    except BaseException as e:
        if writer.kept:
            reason = {KeyboardInterrupt: "Ctrl-C", SystemExit: "terminated"}.get(type(e), f"{type(e).__name__}: {e}")
            print(f"{PROG}: stopped after {writer.frames_written} of {_FRAMES.value} frames ({reason}); the frames "
                  f"made so far are in {writer.kept}", file=sys.stderr, flush=True)
        raise
    total = time.perf_counter() - start
    return {
        "config": config.name, "random_weights": random_weights, "decoder": _DECODER.value,
        "frames": writer.frames_written,
        "size": [config.video.height, config.video.width], "switches": sorted(switches),
        "seconds": round(total, 2), "first_frame_seconds": round(first_frame_s, 2),
        "fps_including_compile": round(writer.frames_written / total, 2), "position_shifts": session.position_shifts,
        "output": _OUTPUT.value,
    }


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the video so far is finished and kept


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with cli.user_errors(PROG, _DEBUG.value):
            switches = check_inputs(FLAGS.config)
        print(json.dumps(_stream(FLAGS.config, switches)))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """Console-script entry point (fc-jax-generate)."""
    main()


if __name__ == "__main__":
    run()
