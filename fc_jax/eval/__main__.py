"""`python -m fc_jax.eval generate|score|tinyworld-bench ...`: benchmark videos from our model, and their scores.

`generate --bench=DIR --checkpoint=DIR --out=DIR [--switch_frames=F1,F2,...]` streams one video per sample into
`--out/<id>.mp4` with the student (`fc_jax.eval.generate`): the sample's person image, garment and caption;
with `--switch_frames` the garment also switches at those frames, to the garments of the next samples in bench
order (wrapping around). Resumable: videos already in `--out` are skipped. `--random_weights` instead of
`--checkpoint` runs the config's model with random weights (a smoke test).

`score --bench=DIR --videos=DIR --out=DIR [weights and VLM options]` scores a folder of videos (ours or another
method's; the video of sample `<id>` is `<id>.mp4`, see `fc_jax.eval.bench`) on HGC-Bench and writes
`report.json`, `report.md` (laid out like the paper's Table 1), `per_sample.csv` and a per-frame curves PNG into
`--out`. Resumable: per-sample results are kept in `--out/samples/`, and a rerun scores only what is missing or
failed. Metrics whose weights or server are not given are reported as not computed, with the reason.
`score --kind=tinyworld` scores a tiny-world bench instead (its csv has a `spec` column) with the exact
tiny-world metrics, one metric `tinyworld` (`fc_jax.eval.tinyworld`; `--metrics` and the weights and VLM options
are not used), into the same files. Its videos must be lossless RGB: H.264 4:2:0 lowers even the ground truth.

`tinyworld-bench --out=DIR [--split --count --height --width --num_frames --switch_frame]` renders tiny-world
specs and writes them as such a bench (HGC-Bench's layout plus the `spec` column; `generate` reads it too).

Flags are absl flags (`--name=value` or `--name value`; `--random_weights` / `--norandom_weights`; `--metrics`
a comma list); `python -m fc_jax.eval NAME --help` lists command NAME's flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import flags

from fc_jax import cli
from fc_jax.config import CONFIG_DIR, config_file
from fc_jax.eval.metrics import ALL_METRICS, EvalOptions
from fc_jax.tinyworld.spec import SPLITS

PROG = "python -m fc_jax.eval"
COMMANDS = {
    "score": "score a folder of videos on HGC-Bench (or a tiny-world bench: --kind=tinyworld)",
    "generate": "generate the benchmark's videos with the streaming student",
    "tinyworld-bench": "write a tiny-world bench folder (score --kind=tinyworld)",
}

_GENERATE_HELP = ("stream one video per sample into --out/<id>.mp4 (skipping those already there). Single-garment "
                  "mode: the sample's src_image, cloth_image and caption. With --switch_frames=F1,F2,... the "
                  "garment also switches at those frames, to the cloth images of the next samples in bench order "
                  "(the k-th switch of sample i takes sample i+k's garment, wrapping around the whole bench).")

_SCORE_HELP = ("score a folder of videos (one per sample, <id>.mp4) on HGC-Bench; write report.json, report.md, "
               "per_sample.csv and a per-frame curves PNG into --out. Resumable (--out/samples/). Metrics whose "
               "weights or server are not given are reported as not computed, with the reason. --kind=tinyworld: "
               "a tiny-world bench (tinyworld-bench), scored with the exact tiny-world metrics.")

# `score`'s flags for the EvalOptions fields (besides `metrics`): where the weights and the VLM server are.
_OPTION_HELP = {
    "musiq_checkpoint": "official MUSIQ spaq_ckpt.npz (vq)",
    "face_checkpoint": "glint360k_curricular_face_r101_backbone.bin (face identity)",
    "face_landmarks": "dlib shape_predictor_68_face_landmarks.dat (default: face_recognition_models)",
    "clip": "transformers CLIP ViT-L/14 folder (aesthetic)",
    "aesthetic_head": "sac+logos+ava1-l14-linearMSE.pth (aesthetic)",
    "vlm_url": "OpenAI-compatible VLM server (default: $FC_EVAL_VLM_URL / $OPENAI_BASE_URL)",
    "vlm_key": "its API key (default: $FC_EVAL_VLM_KEY / $OPENAI_API_KEY)",
    "judge_model": "judge model name (default: $FC_EVAL_JUDGE_MODEL)",
    "gme_model": "GME model name (default: $FC_EVAL_GME_MODEL)",
    "qalign_model": "Q-Align model name (default: $FC_EVAL_QALIGN_MODEL)",
    "vlm_concurrency": "concurrent VLM requests",
    "vlm_timeout": "seconds per VLM request",
    "vlm_cache": "VLM reply cache folder (default: --out/vlm_cache)",
    "judge_frames": "frames shown to the judge",
    "face_frames": "frames scored for face identity",
    "gme_frames": "frames scored by GME",
    "vq_frames": "frames scored for video quality (0 = every frame)",
}

SCORE = flags.FlagValues()
flags.DEFINE_string("bench", None, "HGC-Bench folder (meta_data.csv + images)", flag_values=SCORE)
flags.DEFINE_string("videos", None, "folder with one video per sample, named <id>.mp4", flag_values=SCORE)
flags.DEFINE_string("out", None, "output folder (report files; samples/ for resuming)", flag_values=SCORE)
flags.mark_flags_as_required(["bench", "videos", "out"], flag_values=SCORE)
flags.DEFINE_string("method", "ours", "row name in the report table", flag_values=SCORE)
flags.DEFINE_list("metrics", list(ALL_METRICS), f"comma list from {','.join(ALL_METRICS)}", flag_values=SCORE)
flags.DEFINE_string("plot_sample", None, "sample id whose per-frame curves are plotted", flag_values=SCORE)
flags.DEFINE_integer("limit", 0, "score only the first N samples (0 = all)", flag_values=SCORE)
flags.DEFINE_enum("kind", "hgc", ["hgc", "tinyworld"],
                  "hgc: HGC-Bench and --metrics; tinyworld: a bench with a `spec` column (tinyworld-bench), scored "
                  "with the exact tiny-world metrics (--metrics and the weights and VLM options are not used)",
                  flag_values=SCORE)


def _define_options(flag_values: flags.FlagValues) -> None:
    """One flag per EvalOptions field (but `metrics`), of the field's type and default."""
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}
    for field in dataclasses.fields(EvalOptions):
        if field.name != "metrics":
            kind = type(field.default) if field.default is not None else str
            define[kind](field.name, field.default, _OPTION_HELP.get(field.name, f"EvalOptions.{field.name}"),
                         flag_values=flag_values)


_define_options(SCORE)

GENERATE = flags.FlagValues()
flags.DEFINE_string("bench", None, "HGC-Bench folder (meta_data.csv + images)", flag_values=GENERATE)
flags.DEFINE_string("checkpoint", None,
                    "folder with dit/, vae/ and text_cache.npz or umt5/ (written by fc_jax.convert)",
                    flag_values=GENERATE)
flags.DEFINE_bool("random_weights", False,
                  "instead of --checkpoint: the config's model with RANDOM weights and random prompt embeddings "
                  "(a smoke test; the videos are noise)", flag_values=GENERATE)
flags.DEFINE_string("tinyworld_weights", None, "instead of --checkpoint: a tiny-world weights folder with a student "
                    "(e.g. fc_jax/tinyworld/weights, the shipped one); its config replaces --config",
                    flag_values=GENERATE)
flags.DEFINE_enum("decoder", "vae", ["vae", "light"], "latents to frames: the VAE's streaming decoder or the light "
                  "decoder (from --tinyworld_weights, CHECKPOINT/light_decoder/, or random with --random_weights)",
                  flag_values=GENERATE)
flags.DEFINE_string("out", None, "folder for the videos, <id>.mp4 (score's --videos)", flag_values=GENERATE)
flags.mark_flags_as_required(["bench", "out"], flag_values=GENERATE)
cli.DEFINE_config_file("config", os.path.join(CONFIG_DIR, "wan22_ti2v_5b.py"),
                       "model config file (or a name under configs/, e.g. tiny)", GENERATE, resolve=config_file)
flags.DEFINE_integer("frames", 0, "frames per video, 12k-3 (9, 21, ..., 81); 0 = the config's video.num_frames",
                     flag_values=GENERATE)
flags.DEFINE_integer("seed", 0, "noise seed (the same for every sample)", flag_values=GENERATE)
flags.DEFINE_integer("limit", 0, "generate only the first N samples (0 = all)", flag_values=GENERATE)
flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder (with umt5/)", flag_values=GENERATE)
flags.DEFINE_string("switch_frames", "",
                    "multi-garment mode: comma list of increasing frames (e.g. 40,80) where the garment switches "
                    "to that of the next samples in bench order, wrapping around", flag_values=GENERATE)


TINYWORLD_BENCH = flags.FlagValues()
flags.DEFINE_string("out", None, "folder for the bench (meta_data.csv, images/)", flag_values=TINYWORLD_BENCH)
flags.mark_flag_as_required("out", flag_values=TINYWORLD_BENCH)
flags.DEFINE_enum("split", "heldout", list(SPLITS), "tiny-world split the specs come from", flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("count", 32, "samples", flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("height", 160, "frame height, pixels", flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("width", 128, "frame width, pixels", flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("num_frames", 45, "frames per video", flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("switch_frame", 0, "the target garment switches at this frame (0 = no switch)",
                     flag_values=TINYWORLD_BENCH)
flags.DEFINE_integer("start_seed", 0, "first seed scanned", flag_values=TINYWORLD_BENCH)

_TINYWORLD_BENCH_HELP = ("render the first --count specs of a tiny-world split and write them as a bench folder: "
                         "meta_data.csv (HGC-Bench's columns plus `spec`) and the images beside it.")


def _light_decoder(args):
    """The light decoder for --decoder=light without tiny-world weights: CHECKPOINT/light_decoder/, or random."""
    import jax

    from fc_jax.convert.common import load_params
    from fc_jax.models import light_decoder

    if args.checkpoint is None:
        return light_decoder.init_params(light_decoder.LightDecoderArch(), jax.random.key(args.seed))
    path = os.path.join(args.checkpoint, "light_decoder")
    if not os.path.isdir(path):
        cli.fail(f"{PROG} generate", f"--decoder=light: --checkpoint={args.checkpoint} has no light_decoder/ folder")
    return load_params(os.path.abspath(path))


def _generate(args) -> None:
    from fc_jax.eval.bench import load_bench
    from fc_jax.eval.generate import (build_session, check_switch_frames, generate_bench, load_model,
                                      load_tinyworld, parse_switch_frames)
    from fc_jax.sampling.frames import chunk_count

    tinyworld = None
    if args.tinyworld_weights:
        if args.checkpoint or args.random_weights:
            cli.fail(f"{PROG} generate", "--tinyworld_weights names the model; leave out --checkpoint and "
                     "--random_weights")
        try:
            tinyworld = load_tinyworld(args.tinyworld_weights)
        except (OSError, ValueError) as e:
            cli.fail(f"{PROG} generate", str(e))
    config = tinyworld[0] if tinyworld else args.config
    samples = load_bench(args.bench)
    num_frames = args.frames or config.video.num_frames
    switch_frames = parse_switch_frames(args.switch_frames)
    chunk_count(num_frames, config.student.chunk_frames)  # fail before loading any weights
    check_switch_frames(switch_frames, num_frames, config.student.chunk_frames)
    if args.random_weights and args.checkpoint is None:
        print(f"WARNING: --random_weights: RANDOM weights of config '{config.name}' and random prompt embeddings; "
              "the videos are a smoke test, not results", file=sys.stderr)
    light = None
    if tinyworld:
        _, dit_params, vae_params, texts, light = tinyworld
        if args.decoder == "light" and light is None:
            cli.fail(f"{PROG} generate", f"--decoder=light: {args.tinyworld_weights} has no light_decoder.safetensors")
    else:
        dit_params, vae_params, texts = load_model(config, args.checkpoint, args.tokenizer, args.random_weights,
                                                   args.seed)
        if args.decoder == "light":
            light = _light_decoder(args)
    session = build_session(config, dit_params, vae_params, args.seed, args.decoder, light)
    summary = generate_bench(session, samples, texts, args.out, num_frames, switch_frames, limit=args.limit)
    print(json.dumps({"out": args.out, "config": config.name, "random_weights": args.random_weights,
                      "decoder": args.decoder,
                      **summary.as_json()}))


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:]), the command first."""
    command, rest = cli.subcommand(PROG, COMMANDS, argv, description=__doc__.splitlines()[0])
    if command == "generate":
        cli.parse(GENERATE, f"{PROG} generate", rest, description=_GENERATE_HELP)
        _generate(GENERATE)
    elif command == "tinyworld-bench":
        cli.parse(TINYWORLD_BENCH, f"{PROG} tinyworld-bench", rest, description=_TINYWORLD_BENCH_HELP)
        _tinyworld_bench(TINYWORLD_BENCH)
    else:
        cli.parse(SCORE, f"{PROG} score", rest, description=_SCORE_HELP)
        _score(SCORE)


def _tinyworld_bench(args) -> None:
    from fc_jax.eval.tinyworld import write_tinyworld_bench

    ids = write_tinyworld_bench(args.out, split=args.split, count=args.count, height=args.height, width=args.width,
                                num_frames=args.num_frames, switch_frame=args.switch_frame or None,
                                start_seed=args.start_seed)
    print(json.dumps({"out": args.out, "split": args.split, "num_samples": len(ids)}))


def _score(args) -> None:
    from fc_jax.eval.bench import load_bench
    from fc_jax.eval.metrics import build_metrics
    from fc_jax.eval.report import HGC, write_report
    from fc_jax.eval.runner import score_samples

    if args.kind == "tinyworld":
        from fc_jax.eval.tinyworld import TinyWorldMetric, load_tinyworld_bench, tinyworld_layout

        samples = load_tinyworld_bench(args.bench)[: args.limit or None]
        metrics, layout = [TinyWorldMetric()], tinyworld_layout(samples)
    else:
        samples = load_bench(args.bench)[: args.limit or None]
        options = EvalOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalOptions)
                                 if f.name != "metrics"},
                              metrics=tuple(m.strip() for m in args.metrics if m.strip()))
        if options.vlm_cache is None:
            options.vlm_cache = os.path.join(args.out, "vlm_cache")
        metrics, layout = build_metrics(options), HGC
    for sample in samples:
        for path in sample.missing_files():
            print(f"warning: sample {sample.id}: missing {path} (metrics that need it will name it)", file=sys.stderr)
    for m in metrics:
        status = getattr(m, "backend", None) or f"NOT COMPUTED: {m.reason}"
        print(f"{m.name}: {status}", file=sys.stderr)
    records = score_samples(samples, args.videos, args.out, metrics)
    summary = write_report(args.out, records, metrics, method=args.method, plot_sample=args.plot_sample,
                           layout=layout)
    print(json.dumps({"out": args.out, "num_samples": summary["num_samples"], "mean": summary["mean"],
                      "not_computed": sorted(summary["not_computed"]),
                      "errors": {k: v["count"] for k, v in summary["errors"].items()}}))


def run() -> None:
    """Console-script entry point (fc-jax-eval)."""
    main()


if __name__ == "__main__":
    run()
