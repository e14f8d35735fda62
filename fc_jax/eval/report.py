"""The report of a scoring run: `report.json` (per-sample values and errors, means, backends, what was not
computed and why), `report.md` (a table laid out like the paper's Table 1 with the paper's row beside ours),
`per_sample.csv` and `curves_<id>.png` (the per-frame curves of one sample). What the table shows is a `Layout`:
`HGC` by default, `fc_jax.eval.tinyworld.tinyworld_layout` for the tiny world."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import numpy as np

from fc_jax.eval.metrics.base import Unavailable

# The paper's Table 1 columns, in its order, then our extra columns.
TABLE_COLUMNS = (("cur", "Cur."), ("gme", "GME"), ("amp", "Amp."), ("smoo", "Smoo."), ("vq", "VQ"),
                 ("hgc", "HGC"), ("lgc", "LGC"), ("ntp", "NTP"))
EXTRA_COLUMNS = (("amp_magnitude", "Amp. (magnitude)"), ("aesthetic", "Aesthetic"))
# The paper's Table 1 row for FashionChameleon (REFERENCE §5). Baseline rows are not in our reference facts.
PAPER_ROWS = {
    "FashionChameleon (paper)": {"cur": 0.4911, "gme": 0.6839, "amp": 0.7771, "smoo": 0.9969, "vq": 0.7483,
                                 "hgc": 4.6833, "lgc": 3.9250, "ntp": 4.7625},
}
METRIC_OF = {"cur": "cur", "gme": "gme", "amp": "amp", "amp_magnitude": "amp", "smoo": "smoo", "vq": "vq",
             "hgc": "judge", "lgc": "judge", "ntp": "judge", "aesthetic": "aesthetic"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A report's table: (key, label) columns in order (key = a value's name in its metric's result), the columns
    beside it, the metric filling each key, reference rows, and notes (summary key -> (label, text)), kept in
    report.json and printed under the table as "label: text."."""

    title: str
    legend: str
    columns: tuple[tuple[str, str], ...]
    extra: tuple[tuple[str, str], ...]
    metric_of: dict[str, str]
    rows: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    notes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


HGC = Layout(
    "HGC-Bench report", "Higher is better everywhere.", TABLE_COLUMNS, EXTRA_COLUMNS, METRIC_OF, PAPER_ROWS,
    {"headline_amp": ("Amp.", "amp = |signed mean| of the resized Farnebäck flow (the reference procedure); "
                              "amp_magnitude = mean flow length (the paper's prose), reported beside it")})


def summarise(records: list[dict], metrics: list, layout: Layout = HGC) -> dict:
    """Means over the samples with a value, counts, errors by metric and kind, backends, and not-computed reasons."""
    columns = [c for c, _ in layout.columns + layout.extra]
    means, counts = {}, {}
    for col in columns:
        vals = [r["metrics"].get(layout.metric_of[col], {}).get("values", {}).get(col) for r in records]
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        counts[col] = len(vals)
        means[col] = float(np.mean(vals)) if vals else None
    errors: dict[str, dict] = {}
    for r in records:
        for name, entry in r["metrics"].items():
            if "error" in entry:
                e = errors.setdefault(name, {"count": 0, "by_kind": {}, "samples": {}})
                e["count"] += 1
                e["by_kind"][entry["error_kind"]] = e["by_kind"].get(entry["error_kind"], 0) + 1
                e["samples"][r["id"]] = entry["error"]
    return {
        "num_samples": len(records),
        "mean": means,
        "count": counts,
        "errors": errors,
        "backends": {m.name: m.backend for m in metrics if not isinstance(m, Unavailable)},
        "not_computed": {m.name: m.reason for m in metrics if isinstance(m, Unavailable)},
        **{key: text for key, (_, text) in layout.notes.items()},
    }


def write_report(out_dir: str, records: list[dict], metrics: list, method: str = "ours",
                 plot_sample: str | None = None, layout: Layout = HGC) -> dict:
    """Write report.json, report.md, per_sample.csv and the curves PNG; returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary = summarise(records, metrics, layout)
    per_sample = [{"id": r["id"], "video": r.get("video"),
                   "values": {k: v for e in r["metrics"].values() for k, v in e.get("values", {}).items()},
                   "errors": {n: e["error"] for n, e in r["metrics"].items() if "error" in e},
                   "info": {n: e["info"] for n, e in r["metrics"].items() if e.get("info")}} for r in records]
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"method": method, **summary, "samples": per_sample}, f, indent=1)
    _write_csv(os.path.join(out_dir, "per_sample.csv"), per_sample, layout)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(summary, method, layout))
    chosen = plot_sample or next((r["id"] for r in records if any("per_frame" in e for e in r["metrics"].values())),
                                 None)
    if chosen is not None:
        record = next((r for r in records if r["id"] == chosen), None)
        if record is None:
            raise ValueError(f"--plot_sample {chosen!r} is not a sample id of this benchmark")
        try:
            summary["plot"] = plot_curves(record, os.path.join(out_dir, f"curves_{chosen}.png"))
        except ImportError as e:
            summary["plot"] = f"not drawn: {e} (pip install matplotlib)"
    return summary


def _write_csv(path: str, per_sample: list[dict], layout: Layout) -> None:
    cols = [c for c, _ in layout.columns + layout.extra]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *cols, "errors"])
        for s in per_sample:
            w.writerow([s["id"], *("" if s["values"].get(c) is None else f"{s['values'][c]:.6g}" for c in cols),
                        "; ".join(f"{k}: {v}" for k, v in s["errors"].items())])


def _cell(value) -> str:
    if value is None:
        return "n/c"
    return f"{value:.4f}"


def markdown(summary: dict, method: str, layout: Layout = HGC) -> str:
    head = [label for _, label in layout.columns]
    lines = [f"# {layout.title}", "",
             f"{summary['num_samples']} samples. n/c = not computed (reason below). {layout.legend}", "",
             "| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in layout.rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(c)) for c, _ in layout.columns) + " |")
    lines.append(f"| **{method}** | " + " | ".join(_cell(summary["mean"][c]) for c, _ in layout.columns) + " |")
    if layout.extra:
        lines += ["", "Beside the table: " + ", ".join(
            f"{label} {_cell(summary['mean'][c])}" for c, label in layout.extra) + "."]
    for key, (label, _) in layout.notes.items():
        lines += ["", f"{label}: {summary[key]}."]
    lines += ["", "## Samples counted per column", ""]
    lines += [f"- {label}: {summary['count'][c]} of {summary['num_samples']}"
              for c, label in layout.columns + layout.extra]
    lines += ["", "## Backends", ""] + [f"- {k}: {v}" for k, v in summary["backends"].items()]
    if summary["not_computed"]:
        lines += ["", "## Not computed", ""] + [f"- {k}: {v}" for k, v in summary["not_computed"].items()]
    if summary["errors"]:
        lines += ["", "## Samples a metric could not score", ""]
        for name, e in summary["errors"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in e["by_kind"].items())
            lines.append(f"- {name}: {e['count']} ({kinds})")
            lines += [f"  - {sid}: {msg}" for sid, msg in e["samples"].items()]
    return "\n".join(lines) + "\n"


def plot_curves(record: dict, path: str) -> str:
    """One panel per per-frame curve of the sample (e.g. flow, MUSIQ, face similarity, aesthetic, Q-Align): PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(f"{name}: {key}", values) for name, e in record["metrics"].items()
              for key, values in e.get("per_frame", {}).items() if values]
    if not curves:
        raise ValueError(f"sample {record['id']} has no per-frame curves to plot")
    fig, axes = plt.subplots(len(curves), 1, figsize=(8, 2.2 * len(curves)), squeeze=False)
    for ax, (title, values) in zip(axes[:, 0], curves):
        ax.plot(np.arange(len(values)), np.asarray(values, float), marker=".", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame (sampled index)")
    fig.suptitle(f"sample {record['id']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
