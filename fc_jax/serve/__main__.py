"""`python -m fc_jax.serve [--host=127.0.0.1 --port=8000 --max_streams=2] [--config=... --checkpoint=DIR |
--weights=DIR] [--decoder=vae|light] [--edit=module:function [--edit_args=JSON]]` (console script
`fc-jax-serve`): the live studio.

Loads the model the way `python -m fc_jax.generate` does (default: the tiny world's trained student that ships
with the package, on CPU), builds `--max_streams` streaming sessions and compiles them (a start, chunks, a
switch for every refresh/withdraw/disentangle combination) before it listens, then prints the URL. Open it, pick
a person and a garment, press start, click another garment: the stream switches at the next chunk boundary.
Streams beyond `--max_streams` are refused with a "busy" message (no queue). With `--edit` (a plug-in KV edit,
the `fc_jax.kv_edits` protocol) the page offers it as a switch option in place of the built-in switch.
Ctrl-C stops the server.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

from absl import flags

import fc_jax.config
from fc_jax import cli

PROG = "python -m fc_jax.serve"
READY = "fc_jax studio: serving on"  # the line (stdout) that carries the URL once the server listens

FLAGS = flags.FlagValues()
cli.DEFINE_config_file("config", None, "model config: a packaged name or a file (default: the tiny-world "
                       "student's)", FLAGS, resolve=fc_jax.config.config_file)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "folder with dit/, vae/ and text_cache.npz or umt5/ (as "
                                  "generate's)", flag_values=FLAGS)
_WEIGHTS = flags.DEFINE_string("weights", None, "tiny-world weights folder with a student (default: the shipped "
                               "one)", flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder (with umt5/)",
                                 flag_values=FLAGS)
_DECODER = flags.DEFINE_enum("decoder", "vae", ["vae", "light"], "latents to frames: the VAE's streaming decoder "
                             "or the light decoder", flag_values=FLAGS)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to listen on", flag_values=FLAGS)
_PORT = flags.DEFINE_integer("port", 8000, "port (0: pick a free one; the URL printed names it)",
                             flag_values=FLAGS)
_MAX_STREAMS = flags.DEFINE_integer("max_streams", 2, "streams at once (sessions pre-built and compiled); more "
                                    "tabs are told busy", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "noise seed of every stream", flag_values=FLAGS)
_WARM = flags.DEFINE_enum("warm_switches", "all", ["all", "default"], "compile the switch for every "
                          "refresh/withdraw/disentangle combination at start (all) or only the default one",
                          flag_values=FLAGS)
_EDIT = flags.DEFINE_string("edit", None, "module:function — a plug-in KV edit (fc_jax.kv_edits protocol) the page "
                             "can pick for a switch in place of the built-in one (called with garment= and "
                             "reference= latents)", flag_values=FLAGS)
_EDIT_ARGS = flags.DEFINE_string("edit_args", None, "JSON object of numbers: keyword arguments bound to --edit",
                                 flag_values=FLAGS)
_DEBUG = cli.DEFINE_debug(FLAGS)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_job():
    """generate's Job for the flags (its rules, `generate.which_model`: --checkpoint with --config, --weights
    alone, neither: the shipped tiny-world student, or the tiny config at random weights where none is
    installed), the checkpoint and the light decoder checked."""
    from fc_jax.generate import Job, which_model

    if _MAX_STREAMS.value < 1:
        raise cli.UserError(f"--max_streams={_MAX_STREAMS.value}: at least 1")
    if not 0 <= _PORT.value < 65536:
        raise cli.UserError(f"--port={_PORT.value}: expected 0..65535")
    if _EDIT_ARGS.value is not None and _EDIT.value is None:
        raise cli.UserError("--edit_args are the arguments of --edit's edit; give --edit too")
    mode, config, folder, note = which_model(FLAGS.config, _CHECKPOINT.value, _WEIGHTS.value)
    if mode == "checkpoint":
        from fc_jax.inference import check_checkpoint, checkpoint_parts

        try:
            checkpoint_parts(_CHECKPOINT.value, _TOKENIZER.value)
            check_checkpoint(config, _CHECKPOINT.value, _TOKENIZER.value, [])
        except (OSError, ValueError) as e:
            raise cli.UserError(str(e)) from e
    if mode == "tinyworld" and _DECODER.value == "light" and not os.path.isfile(
            os.path.join(folder, "light_decoder.safetensors")):
        raise cli.UserError(f"--decoder=light: the tiny-world weights {folder} have no light_decoder.safetensors")
    return Job(mode, config, 21, "", folder, mode == "tinyworld", note)


def plug_in_edit():
    """--edit with --edit_args bound, or None; UserError naming what is wrong."""
    from fc_jax.generate import bind_edit

    return None if _EDIT.value is None else bind_edit(_EDIT.value, _EDIT_ARGS.value)


def build(job, edit=None):
    """(Model, SessionPool, Gallery), the pool warmed (with `edit`'s switch too, if given)."""
    import jax

    from fc_jax.generate import load_weights
    from fc_jax.serve.gallery import Gallery
    from fc_jax.serve.model import Model, SessionPool, switch_combinations

    if job.note:
        _log(job.note)
    from fc_jax.tinyworld import weights

    shipped = job.weights is not None and os.path.samefile(job.weights, weights.SHIPPED)
    source = {"random": "RANDOM weights", "checkpoint": _CHECKPOINT.value,
              "tinyworld": "the shipped tiny-world student" if shipped else f"the tiny-world student in "
                                                                            f"{job.weights}"}[job.mode]
    _log(f"building the weights: {source}")
    dit_params, vae_params, texts, light = load_weights(job, jax.random.key(_SEED.value), _DECODER.value,
                                                        _CHECKPOINT.value, _TOKENIZER.value)
    vocabulary = None
    if job.mode == "tinyworld":
        from fc_jax.tinyworld.text import caption_vocabulary

        vocabulary = frozenset(caption_vocabulary())
    model = Model(job.config, dit_params, vae_params, texts, _DECODER.value, light, vocabulary,
                  job.mode == "random", f"{job.config.name}: {source}, decoder {_DECODER.value}", edit,
                  _EDIT.value or "")
    v = job.config.video
    gallery = Gallery(v.height, v.width)
    person, first, second = gallery.people[0], gallery.garments[0], gallery.garments[1]
    context, _ = texts([person.caption_with(first.garment)])
    pool = SessionPool(model, context[:1], _MAX_STREAMS.value, seed=_SEED.value)
    start = time.perf_counter()
    _log(f"compiling {pool.size} streaming sessions ({v.height}x{v.width}, {v.fps} fps) ...")
    pool.warm(person.image, first.image, second.image,
              None if _WARM.value == "all" else switch_combinations()[:1], edit=edit)
    _log(f"compiled in {time.perf_counter() - start:.1f}s")
    return model, pool, gallery


async def _serve(model, pool, gallery) -> None:
    from fc_jax.serve.app import Studio, serve

    with tempfile.TemporaryDirectory(prefix="fc_jax_studio_") as folder:
        studio = Studio(model, pool, gallery, folder)
        runner, url = await serve(studio, _HOST.value, _PORT.value)
        print(f"{READY} {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    with cli.user_errors(PROG, _DEBUG.value):
        job = resolve_job()
        edit = plug_in_edit()
    model, pool, gallery = build(job, edit)
    try:
        asyncio.run(_serve(model, pool, gallery))
    except KeyboardInterrupt:
        _log(f"{PROG}: stopped (Ctrl-C)")


def run() -> None:
    """Console-script entry point (fc-jax-serve)."""
    main()


if __name__ == "__main__":
    run()
