"""Stream a garment video: `python -m fc_jax.generate [--config=NAME[:VARIANT]] [--checkpoint=DIR | --weights=DIR]
--reference=IMG --garment=IMG [--switch=FRAME:IMG[,FRAME:IMG...] ...] --frames=N --output=video.mp4`.

With no flags it streams the tiny world's trained student that ships with the package (`fc_jax.tinyworld.weights`;
`--weights=DIR` names another tiny-world weights folder): a built-in held-out person walking in a built-in
garment, switched to a second garment at frame 45 of 93 (`fc_jax.tinyworld.demo`), and the JSON summary carries
the tiny-world metrics of what it made (`tinyworld_metrics`: garment before and after the switch, the switch's
latency, leakage and continuity, motion against the caption, identity, VQ). `--reference / --garment / --switch
/ --prompt` replace the built-in ones with any tiny-world-style images (160x128; the metrics need the built-in
case and are left out then).

`--config` is a packaged config (`tiny` or `wan22_ti2v_5b`) or a config file, with `--config.a.b=value`
overrides; it goes with `--checkpoint`, or alone for a RANDOM-weight smoke run (also what runs when no tiny-world
student is installed).

For researchers: `--probe=probes.json` writes every chunk's attention probes (`fc_jax.kv_probes`: the mass of its
last denoising step on the reference, the garment, the sink, each history chunk by age and itself, per layer),
and `--edit=module:function` (with `--edit_args='{"name": number}'`) runs a KV edit of the `fc_jax.kv_edits`
protocol at every switch in place of the built-in refresh + withdraw + disentangle.

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

import dataclasses
import json
import os
import re
import signal
import sys
import time
from typing import Any

from absl import flags
from PIL import Image, ImageDraw

import fc_jax.config
from fc_jax import cli
from fc_jax.inputs import check_image, check_writable
from fc_jax.sampling.frames import chunk_count, switch_chunks

PROG = "python -m fc_jax.generate"
WEIGHTS_LINE = "building the weights"  # printed (stderr) once every input check has passed

FLAGS = flags.FlagValues()  # private: importing fc_jax.generate defines no global flags
cli.DEFINE_config_file("config", None, "model config: a packaged name (tiny, wan22_ti2v_5b) or a file (default: "
                       "the tiny-world student's, or tiny)", FLAGS, resolve=fc_jax.config.config_file)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "folder with dit/, vae/ and text_cache.npz or umt5/",
                                  flag_values=FLAGS)
_WEIGHTS = flags.DEFINE_string("weights", None, "tiny-world weights folder with a student (default, when neither "
                               "--config nor --checkpoint is given: the shipped one)", flag_values=FLAGS)
_REFERENCE = flags.DEFINE_string("reference", None, "image of the person", flag_values=FLAGS)
_GARMENT = flags.DEFINE_string("garment", None, "image of the garment", flag_values=FLAGS)
_SWITCH = flags.DEFINE_multi_string("switch", [], "FRAME:IMAGE — switch to this garment at this frame; repeat the "
                                    "flag or separate items with commas (--switch=9:a.png,15:b.png)",
                                    flag_values=FLAGS)
_PROMPT = flags.DEFINE_string("prompt", None, "text prompt (with a checkpoint or the tiny-world student; default: "
                               "'' or the built-in case's caption)", flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder (with umt5/)",
                                 flag_values=FLAGS)
_FRAMES = flags.DEFINE_integer("frames", None, "video frames, 12k-3 (9, 21, 33, ..., 81, ...; default: 93 for the "
                               "tiny-world student, else 21)", flag_values=FLAGS)
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
_PROBE = flags.DEFINE_string("probe", None, "JSON file: every chunk's attention probes (fc_jax.kv_probes: the mass "
                             "per layer on the reference, garment, sink, history by age and the chunk itself)",
                             flag_values=FLAGS)
_EDIT = flags.DEFINE_string("edit", None, "module:function — a KV edit (fc_jax.kv_edits protocol) that replaces the "
                            "built-in switch, e.g. fc_jax.kv_edits:selective_switch", flag_values=FLAGS)
_EDIT_ARGS = flags.DEFINE_string("edit_args", None, "JSON object of numbers passed to --edit's edit as keyword "
                                 "arguments, e.g. '{\"threshold\": 0.2}'", flag_values=FLAGS)
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


@dataclasses.dataclass(frozen=True)
class Job:
    """The flags, resolved. mode: "checkpoint" (--checkpoint), "tinyworld" (a tiny-world student: `weights` is its
    folder) or "random" (the config's model at random weights, a smoke run); `builtin`: the tiny-world job uses
    the built-in case's images and switch (`fc_jax.tinyworld.demo`), so its metrics can be scored."""

    mode: str
    config: Any
    frames: int
    prompt: str
    weights: str | None = None
    builtin: bool = False
    note: str = ""  # said when streaming starts (why this mode)


def builtin_switch_frame(frames: int) -> int | None:
    """The chunk boundary (9 + 12k) nearest the middle of a `frames`-frame (12n - 3) video; None for one chunk."""
    n = (frames + 3) // 12
    return 12 * (n // 2) - 3 if n >= 2 else None


def _frames(default: int) -> int:
    return default if _FRAMES.value is None else _FRAMES.value


def which_model(flag_config, checkpoint: str | None, weights_dir: str | None) -> tuple[str, Any, str | None, str]:
    """(mode, config, tiny-world weights folder or None, note) of --config / --checkpoint / --weights (see `Job`):
    --checkpoint or --config alone -> that config (default tiny); else the tiny-world student in --weights or the
    shipped one, or where none is installed the tiny config at random weights (said in `note`). UserError for
    flags that do not go together. Shared with `fc_jax.serve`."""
    from fc_jax.tinyworld import weights

    if checkpoint and weights_dir:
        raise cli.UserError("--checkpoint and --weights each name a model; give one of them")
    if weights_dir and flag_config is not None:
        raise cli.UserError("--weights brings its own config (its card's); leave out --config")
    if checkpoint or (flag_config is not None and not weights_dir):
        config = flag_config if flag_config is not None else fc_jax.config.load_config("tiny")
        return ("checkpoint" if checkpoint else "random"), config, None, ""
    folder = weights_dir or weights.SHIPPED
    if not os.path.isfile(weights.part_path("student", folder)):
        if weights_dir:
            raise cli.UserError(f"--weights={folder}: no student.safetensors there (write one with python -m "
                                "fc_jax.tinyworld ship from a recipe that ran its gr_dmd step)")
        return "random", fc_jax.config.load_config("tiny"), None, (
            "no tiny-world student is installed (fc_jax/tinyworld/weights): the tiny config instead")
    try:
        return "tinyworld", weights.configs(folder)["student"], folder, ""
    except (KeyError, ValueError) as e:
        raise cli.UserError(f"--weights={folder}: its card.json names no usable student config ({e})") from e


def resolve_job(flag_config) -> Job:
    """Which model runs, from --checkpoint / --weights / --config (`flag_config`: None when not given), and the
    frames, prompt and case; UserError for flags that do not go together."""
    mode, config, folder, note = which_model(flag_config, _CHECKPOINT.value, _WEIGHTS.value)
    if mode != "tinyworld":
        return Job(mode, config, _frames(21), _PROMPT.value or "", note=note)
    builtin = _REFERENCE.value is None and _GARMENT.value is None and not _SWITCH.value
    return Job("tinyworld", config, _frames(93), _PROMPT.value, folder, builtin)


def check_inputs(job: Job) -> None:
    """Every check that needs no weights, the cheap ones (no jax) first; UserError naming the flag."""
    config = job.config
    frames, chunk_frames = job.frames, config.student.chunk_frames
    try:
        chunk_count(frames, chunk_frames)
    except ValueError as e:
        raise cli.UserError(f"--frames={frames}: {e}") from e
    if job.mode == "tinyworld" and _DECODER.value == "light" and not os.path.isfile(
            os.path.join(job.weights, "light_decoder.safetensors")):
        raise cli.UserError(f"--decoder=light: the tiny-world weights {job.weights} have no light_decoder.safetensors")
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
    for flag, path in (("--output", _OUTPUT.value), ("--probe", _PROBE.value)):
        try:
            if path is not None:
                check_writable(path)
        except ValueError as e:
            raise cli.UserError(f"{flag}: {e}") from e
    from fc_jax.inference import check_checkpoint, checkpoint_parts

    try:
        if _CHECKPOINT.value:
            checkpoint_parts(_CHECKPOINT.value, _TOKENIZER.value)  # its folders, before jax is imported
        _check_switch_options(config)
        edit_spec()
        if _CHECKPOINT.value:
            check_checkpoint(config, _CHECKPOINT.value, _TOKENIZER.value, [job.prompt])
    except (OSError, ValueError) as e:
        raise cli.UserError(str(e)) from e


def edit_spec():
    """The --edit function with --edit_args bound, or None; UserError for flags that do not go together, bad
    arguments or an edit that cannot be imported."""
    if _EDIT.value is None:
        if _EDIT_ARGS.value is not None:
            raise cli.UserError("--edit_args are the arguments of --edit's edit; give --edit too")
        return None
    ablations = [name for name, on in (("--no_refresh", _NO_REFRESH.value), ("--no_withdraw", _NO_WITHDRAW.value),
                                       ("--no_disentangle", _NO_DISENTANGLE.value), ("--keep_frames", _KEEP.value),
                                       ("--rebase", _REBASE.value)) if on]
    if ablations:
        raise cli.UserError(f"--edit replaces the built-in switch; {', '.join(ablations)} cannot go with it")
    return bind_edit(_EDIT.value, _EDIT_ARGS.value)


def bind_edit(edit: str, edit_args: str | None):
    """The edit `--edit=edit` names with `--edit_args=edit_args` (JSON) bound; UserError naming the bad flag.
    Shared with `fc_jax.serve`."""
    from fc_jax.kv_edits import load_edit, parse_edit_args

    try:
        args = parse_edit_args(edit_args) if edit_args is not None else {}
    except ValueError as e:
        raise cli.UserError(f"--edit_args={edit_args}: {e}") from e
    try:
        return load_edit(edit, args)
    except ValueError as e:
        raise cli.UserError(f"--edit: {e}") from e


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


def load_weights(job: Job, key, decoder: str = "vae", checkpoint: str | None = None, tokenizer: str | None = None):
    """(dit params, vae params, texts, light decoder params or None) of `job`'s model. `texts`: prompts ->
    (embeddings [B, Lt, text_dim], lengths [B]), an `fc_jax.text.EmbeddingCache` (the tiny world's text encoder,
    or the checkpoint's text cache / umT5), or for a random run one random embedding whatever the prompt.
    Shared with `fc_jax.serve`, which encodes a new prompt per stream."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fc_jax.inference import load_checkpoint
    from fc_jax.models import dit, light_decoder, vae

    config, light = job.config, None
    if job.mode == "random":
        model = dit.build_model(config)
        dit_params = dit.init_params(model, jax.random.fold_in(key, 1))
        vae_params = vae.init_params(config, jax.random.fold_in(key, 2))
        context = 0.1 * jax.random.normal(jax.random.fold_in(key, 3), (1, config.model.text_len, config.model.text_dim))
        if decoder == "light":
            light = light_decoder.init_params(light_decoder.LightDecoderArch(), jax.random.fold_in(key, 4))
        row = np.asarray(context)
        texts = lambda prompts: (np.repeat(row, len(prompts), 0), np.full((len(prompts),), row.shape[1], np.int32))
        return dit_params, vae_params, texts, light
    if job.mode == "tinyworld":
        from fc_jax.tinyworld import weights

        from fc_jax.text import EmbeddingCache

        part = lambda name: jax.tree.map(jnp.asarray, weights.load_part(name, job.weights))
        texts = EmbeddingCache(config.umt5.text_len, weights.text_encoder(config, job.weights))
        light = part("light_decoder") if decoder == "light" else None
        return part("student"), part("vae"), texts, light

    from fc_jax.convert.common import load_params

    dit_params, vae_params, texts = load_checkpoint(config, checkpoint, tokenizer)
    if decoder == "light":
        light = load_params(os.path.abspath(os.path.join(checkpoint, "light_decoder")))
    return dit_params, vae_params, texts, light


def _load_weights(job: Job, prompt: str, key):
    """(dit params, vae params, context [1, Lt, text_dim], light decoder params or None)."""
    import jax.numpy as jnp

    dit_params, vae_params, texts, light = load_weights(job, key, _DECODER.value, _CHECKPOINT.value,
                                                        _TOKENIZER.value)
    embeddings, _ = texts([prompt])
    return dit_params, vae_params, jnp.asarray(embeddings), light


def _inputs(job: Job):
    """(reference, garment, switches {frame: image}, prompt, the built-in case or None): the flags' images, and
    for what they leave out the built-in tiny-world case's (or, for a random run, built-in drawings)."""
    switches = parse_switches(_SWITCH.value)
    if job.mode == "tinyworld":
        from fc_jax.tinyworld.demo import demo_case

        v = job.config.video
        case = demo_case(job.frames, builtin_switch_frame(job.frames) if job.builtin else None, v.height, v.width)
        if job.builtin and case.spec.switch_frame is not None:
            switches = {case.spec.switch_frame: case.switch_garment}
        prompt = case.caption if job.prompt is None else job.prompt
        if not job.builtin:
            print("tiny-world student with your images: no metrics (they need the built-in case)", file=sys.stderr)
        return (_REFERENCE.value or case.reference, _GARMENT.value or case.garment, switches, prompt,
                case if job.builtin else None)
    reference, garment = _REFERENCE.value, _GARMENT.value
    if reference is None or garment is None:  # (random weights: with --checkpoint both are required)
        person, shirt = demo_images(job.config.video.height, job.config.video.width)
        reference, garment = reference or person, garment or shirt
        print("no --reference/--garment: using built-in drawings", file=sys.stderr)
    return reference, garment, switches, job.prompt, None


def _stream(job: Job) -> dict:
    """Build the weights and the session, stream into the output; the JSON summary."""
    import jax
    import numpy as np

    from fc_jax.sampling.streaming import StreamingSession, SwitchOptions
    from fc_jax.video import Mp4Writer

    config = job.config
    source = {"random": "RANDOM (no --checkpoint)", "checkpoint": _CHECKPOINT.value,
              "tinyworld": f"the tiny-world student in {job.weights}"}[job.mode]
    if job.note:
        print(job.note, file=sys.stderr)
    print(f"{WEIGHTS_LINE}: {source}", file=sys.stderr, flush=True)
    reference, garment, switches, prompt, case = _inputs(job)
    edit = edit_spec()
    dit_params, vae_params, context, light = _load_weights(job, prompt, jax.random.key(_SEED.value))
    if job.mode == "random":
        print(f"RANDOM weights of config '{config.name}' (a smoke test, not a real video)", file=sys.stderr)
    options = SwitchOptions(not _NO_REFRESH.value, not _NO_WITHDRAW.value, not _NO_DISENTANGLE.value,
                            _KEEP.value, _REBASE.value)
    session = StreamingSession(config, dit_params, vae_params, context, seed=_SEED.value, switch=options,
                               decoder=_DECODER.value, light_decoder_params=light, probe=_PROBE.value is not None)
    start = time.perf_counter()
    session.start(reference, garment)
    print(f"streaming {job.frames} frames to {_OUTPUT.value} (the first chunk compiles the student's steps) ...",
          file=sys.stderr, flush=True)
    first_frame_s, made = None, []
    writer = Mp4Writer(_OUTPUT.value, fps=config.video.fps, keep_partial=True)
    try:
        with writer:
            for frames in session.stream(job.frames, switches, edit=edit):
                if first_frame_s is None:
                    first_frame_s = time.perf_counter() - start
                writer.write(frames)
                if case is not None:
                    made.append(frames)
    except BaseException as e:
        if writer.kept:
            reason = {KeyboardInterrupt: "Ctrl-C", SystemExit: "terminated"}.get(type(e), f"{type(e).__name__}: {e}")
            print(f"{PROG}: stopped after {writer.frames_written} of {job.frames} frames ({reason}); the frames "
                  f"made so far are in {writer.kept}", file=sys.stderr, flush=True)
        raise
    finally:
        if _PROBE.value is not None:
            _write_probes(_PROBE.value, session)
    total = time.perf_counter() - start
    summary = {
        "config": config.name, "weights": job.mode if job.mode != "tinyworld" else job.weights,
        "random_weights": job.mode == "random", "decoder": _DECODER.value, "frames": writer.frames_written,
        "size": [config.video.height, config.video.width], "switches": sorted(switches),
        "seconds": round(total, 2), "first_frame_seconds": round(first_frame_s, 2),
        "fps_including_compile": round(writer.frames_written / total, 2), "position_shifts": session.position_shifts,
        "edit": _EDIT.value, "probe": _PROBE.value, "output": _OUTPUT.value,
    }
    if case is not None:
        from fc_jax.tinyworld.demo import score

        summary["prompt"] = prompt
        summary["tinyworld_metrics"] = {k: round(v, 4) for k, v in score(np.concatenate(made), case).items()}
    return summary


def _write_probes(path: str, session) -> None:
    """The session's probe log (the chunks made so far) as JSON: regions, then per chunk its masses per layer."""
    from fc_jax import kv_probes

    with open(path, "w") as f:
        json.dump({"regions": list(kv_probes.region_names(session.spec)), "layers": session.model.cfg.num_layers,
                   "chunks": session.probe_log}, f)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the video so far is finished and kept


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with cli.user_errors(PROG, _DEBUG.value):
            job = resolve_job(FLAGS.config)
            check_inputs(job)
        print(json.dumps(_stream(job)))
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
