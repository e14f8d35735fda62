"""`python -m fc_jax.eval score --bench=DIR --videos=DIR --out=DIR [weights and VLM options]`.

Scores a folder of videos (ours or another method's; the video of sample `<id>` is `<id>.mp4`, see
`fc_jax.eval.bench`) on HGC-Bench and writes `report.json`, `report.md` (laid out like the paper's Table 1),
`per_sample.csv` and a per-frame curves PNG into `--out`. Resumable: per-sample results are kept in
`--out/samples/`, and a rerun scores only what is missing or failed. Metrics whose weights or server are not
given are reported as not computed, with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from fc_jax.eval.metrics import ALL_METRICS, EvalOptions


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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
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
