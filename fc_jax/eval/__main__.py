"""`python -m fc_jax.eval generate|score ...`: HGC-Bench videos from our model, and their scores.

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from fc_jax.config import CONFIG_DIR
from fc_jax.eval.metrics import ALL_METRICS, EvalOptions

_GENERATE_HELP = ("stream one video per sample into --out/<id>.mp4 (skipping those already there). Single-garment "
                  "mode: the sample's src_image, cloth_image and caption. With --switch_frames=F1,F2,... the "
                  "garment also switches at those frames, to the cloth images of the next samples in bench order "
                  "(the k-th switch of sample i takes sample i+k's garment, wrapping around the whole bench).")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fc_jax.eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score a folder of videos on HGC-Bench")
    score.add_argument("--bench", required=True, help="HGC-Bench folder (meta_data.csv + images)")
    score.add_argument("--videos", required=True, help="folder with one video per sample, named <id>.mp4")
    score.add_argument("--out", required=True, help="output folder (report files; samples/ for resuming)")
    score.add_argument("--method", default="ours", help="row name in the report table")
    score.add_argument("--metrics", default=",".join(ALL_METRICS), help=f"comma list from {','.join(ALL_METRICS)}")
    score.add_argument("--plot_sample", default=None, help="sample id whose per-frame curves are plotted")
    score.add_argument("--limit", type=int, default=0, help="score only the first N samples (0 = all)")
    for field in dataclasses.fields(EvalOptions):
        if field.name == "metrics":
            continue
        kind = type(field.default) if field.default is not None else str
        score.add_argument(f"--{field.name}", type=kind, default=field.default)
    _add_generate(sub)
    return parser


def _add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="generate the benchmark's videos with the streaming student",
                         description=_GENERATE_HELP)
    gen.add_argument("--bench", required=True, help="HGC-Bench folder (meta_data.csv + images)")
    gen.add_argument("--checkpoint", default=None,
                     help="folder with dit/, vae/ and text_cache.npz or umt5/ (written by fc_jax.convert)")
    gen.add_argument("--random_weights", action="store_true",
                     help="instead of --checkpoint: the config's model with RANDOM weights and random prompt "
                          "embeddings (a smoke test; the videos are noise)")
    gen.add_argument("--out", required=True, help="folder for the videos, <id>.mp4 (score's --videos)")
    gen.add_argument("--config", default=os.path.join(CONFIG_DIR, "wan22_ti2v_5b.py"),
                     help="model config file (or a name under configs/, e.g. tiny)")
    gen.add_argument("--frames", type=int, default=0,
                     help="frames per video, 12k-3 (9, 21, ..., 81); 0 = the config's video.num_frames")
    gen.add_argument("--seed", type=int, default=0, help="noise seed (the same for every sample)")
    gen.add_argument("--limit", type=int, default=0, help="generate only the first N samples (0 = all)")
    gen.add_argument("--tokenizer", default=None, help="google/umt5-xxl tokenizer folder (with umt5/)")
    gen.add_argument("--switch_frames", default="",
                     help="multi-garment mode: comma list of increasing frames (e.g. 40,80) where the garment "
                          "switches to that of the next samples in bench order, wrapping around")


def _generate(args) -> None:
    from fc_jax.config import load_config
    from fc_jax.eval.bench import load_bench
    from fc_jax.eval.generate import (build_session, check_switch_frames, generate_bench, load_model,
                                      parse_switch_frames)
    from fc_jax.sampling.streaming import chunk_frame_counts

    config = load_config(args.config)
    samples = load_bench(args.bench)
    num_frames = args.frames or config.video.num_frames
    switch_frames = parse_switch_frames(args.switch_frames)
    chunk_frame_counts(num_frames, config.student.chunk_frames)  # fail before loading any weights
    check_switch_frames(switch_frames, num_frames, config.student.chunk_frames)
    if args.random_weights and args.checkpoint is None:
        print(f"WARNING: --random_weights: RANDOM weights of config '{config.name}' and random prompt embeddings; "
              "the videos are a smoke test, not results", file=sys.stderr)
    dit_params, vae_params, texts = load_model(config, args.checkpoint, args.tokenizer, args.random_weights,
                                               args.seed)
    session = build_session(config, dit_params, vae_params, args.seed)
    summary = generate_bench(session, samples, texts, args.out, num_frames, switch_frames, limit=args.limit)
    print(json.dumps({"out": args.out, "config": config.name, "random_weights": args.random_weights,
                      **summary.as_json()}))


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        _generate(args)
    else:
        _score(args)


def _score(args) -> None:
    from fc_jax.eval.bench import load_bench
    from fc_jax.eval.metrics import build_metrics
    from fc_jax.eval.report import write_report
    from fc_jax.eval.runner import score_samples

    samples = load_bench(args.bench)[: args.limit or None]
    for sample in samples:
        for path in sample.missing_files():
            print(f"warning: sample {sample.id}: missing {path} (metrics that need it will name it)", file=sys.stderr)
    options = EvalOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalOptions)
                             if f.name != "metrics"},
                          metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()))
    if options.vlm_cache is None:
        options.vlm_cache = os.path.join(args.out, "vlm_cache")
    metrics = build_metrics(options)
    for m in metrics:
        status = getattr(m, "backend", None) or f"NOT COMPUTED: {m.reason}"
        print(f"{m.name}: {status}", file=sys.stderr)
    records = score_samples(samples, args.videos, args.out, metrics)
    summary = write_report(args.out, records, metrics, method=args.method, plot_sample=args.plot_sample)
    print(json.dumps({"out": args.out, "num_samples": summary["num_samples"], "mean": summary["mean"],
                      "not_computed": sorted(summary["not_computed"]),
                      "errors": {k: v["count"] for k, v in summary["errors"].items()}}))


if __name__ == "__main__":
    main()
