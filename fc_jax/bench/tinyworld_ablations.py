"""Tables 2 and 3 on the tiny world (`python -m fc_jax.bench tinyworld --what=table2,table3 --ablations=DIR`):
the variants `python -m fc_jax.tinyworld ablations --workdir=DIR` trained (`fc_jax.tinyworld.ablations`), scored
on the same held-out samples, fixed seeds, this CPU, side by side in one run.

- Table 2 (`table2`): each stage-1 variant as a teacher (`teacher_steps` UniPC steps, text guidance) on 45-frame
  held-out specs, every tiny-world metric and frames per second, as Table 1's teacher row, and `eval_loss`: the
  stage's flow-matching loss on the eval split at the end of its run (its `eval.jsonl`).
- Table 3 (`table3`): each stage-3 variant as the streaming student on `LONG_FRAMES`-frame held-out specs
  (long extrapolation: the rollout trained on 4 chunks), every metric of the whole video, and per chunk the VQ
  (`metrics.vq_score`, mean over the chunk's frames) and Amp. (`metrics.amplitude` of the chunk's labels);
  `late_vq` / `late_amp` average the last `LATE_CHUNKS` chunks. `plot_table3` draws the per-chunk curves.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.bench.tinyworld_tables import ONE_SWITCH, TinyWorld, _row, _timed, sampler_inputs, teacher_videos
from fc_jax.tinyworld.spec import full_caption

LONG_FRAMES = 165  # 14 chunks: 3.5x the rollout's 4
LATE_CHUNKS = 4
TABLE2_COLUMNS = ("eval_loss", "id/id", "motion/motion_alignment", "motion/amp_score", "vq/vq", "garment/hgc", "garment/lgc",
                  "ntp/ntp", "fps")
TABLE3_COLUMNS = ("late_vq", "late_amp", "vq/vq", "motion/amp_score", "garment/hgc", "id/id", "fps")


def _variants(workdir: str, table: str, variant: str):
    """{name: (config, params)} of the trained variants of `table`; the names without exported parameters."""
    import os

    from fc_jax.convert.common import load_params
    from fc_jax.tinyworld import ablations

    found, missing = {}, []
    for name in ablations.TABLES[table][1]:
        folder = ablations.params_dir(workdir, name)
        if os.path.isdir(folder):
            found[name] = (ablations.variant_config(table, name, workdir, variant),
                           jax.tree.map(jnp.asarray, load_params(folder)))
        else:
            missing.append(name)
    return found, missing


def _last_eval_loss(workdir: str, name: str) -> float:
    import json
    import os

    from fc_jax.tinyworld import ablations

    with open(os.path.join(ablations.folder(workdir), name, "eval.jsonl")) as f:
        evals = [json.loads(line) for line in f if line.strip()]
    return round(float(evals[-1]["eval/loss"]), 4)


def table2(tw: TinyWorld, workdir: str, samples: int, seed: int, teacher_steps: int, variant: str = "") -> dict:
    from fc_jax.models import dit
    from fc_jax.tinyworld import ablations
    from fc_jax.tinyworld.render import render_sample

    variants, missing = _variants(workdir, "table2", variant)
    specs = tw.specs(samples, ONE_SWITCH[0])
    truths = [render_sample(s) for s in specs]
    inputs = sampler_inputs(tw, specs, truths, seed, teacher_steps)
    rows = {name: {**_row(teacher_videos(dit.build_model(config), params, inputs), specs, truths),
                   "eval_loss": _last_eval_loss(workdir, name)}
            for name, (config, params) in variants.items()}
    return {"rows": rows, "missing": missing, "samples": samples, "frames": ONE_SWITCH[0],
            "teacher_steps": teacher_steps, "train_steps": ablations.steps_of("table2", variant)}


def _per_chunk(video: np.ndarray, spec, chunk_frames: int) -> tuple[list[float], list[float]]:
    from fc_jax.sampling.frames import chunk_count, chunk_start
    from fc_jax.tinyworld import metrics
    from fc_jax.tinyworld.render import render_background

    labels = metrics.classify(video, render_background(spec))
    vq = metrics.vq_score(video)
    bounds = [chunk_start(c, chunk_frames) for c in range(chunk_count(len(video), chunk_frames))] + [len(video)]
    return ([float(vq[a:b].mean()) for a, b in zip(bounds, bounds[1:])],
            [metrics.amplitude(labels[a:b]) for a, b in zip(bounds, bounds[1:])])


def table3(tw: TinyWorld, workdir: str, samples: int, seed: int, variant: str = "") -> dict:
    from fc_jax.sampling.streaming import StreamingSession
    from fc_jax.tinyworld.render import render_sample

    from fc_jax.tinyworld import ablations

    variants, missing = _variants(workdir, "table3", variant)
    cfg = tw.configs["student"]
    specs = tw.specs(samples, LONG_FRAMES)
    truths = [render_sample(s) for s in specs]
    rows = {}
    for name, (config, params) in variants.items():
        session = StreamingSession(config, params, tw.params["vae"], tw.context(""), seed=seed)
        made, vq_curves, amp_curves = [], [], []
        for spec, truth in zip(specs, truths):
            def stream():
                session.start(truth.reference, truth.garment, tw.context(full_caption(spec)))
                return np.concatenate(list(session.stream(spec.num_frames, progress=False)))

            video, seconds = _timed(stream)
            made.append((video, seconds))
            vq, amp = _per_chunk(video, spec, cfg.student.chunk_frames)
            vq_curves.append(vq)
            amp_curves.append(amp)
        row = _row(made, specs, truths)
        row["vq_per_chunk"] = np.mean(vq_curves, 0).round(4).tolist()
        row["amp_per_chunk"] = np.mean(amp_curves, 0).round(4).tolist()
        row["late_vq"] = round(float(np.mean(row["vq_per_chunk"][-LATE_CHUNKS:])), 4)
        row["late_amp"] = round(float(np.mean(row["amp_per_chunk"][-LATE_CHUNKS:])), 4)
        rows[name] = row
    return {"rows": rows, "missing": missing, "samples": samples, "frames": LONG_FRAMES,
            "late_chunks": LATE_CHUNKS, "train_steps": ablations.steps_of("table3", variant)}


def goals(t2: dict | None, t3: dict | None) -> dict:
    """The issue's comparisons, each from measured rows (None where a row is missing)."""
    out = {}
    if t2:
        r = t2["rows"]
        garment = lambda row: (row["garment/hgc"] + row["garment/lgc"]) / 2
        if "in_context_full" in r and "channel_concat_full" in r:
            out["in_context_over_channel_concat_garment"] = {
                "in_context": round(garment(r["in_context_full"]), 4),
                "channel_concat": round(garment(r["channel_concat_full"]), 4),
                "holds": garment(r["in_context_full"]) > garment(r["channel_concat_full"])}
            out["in_context_below_channel_concat_eval_loss"] = {
                "in_context": r["in_context_full"]["eval_loss"],
                "channel_concat": r["channel_concat_full"]["eval_loss"],
                "holds": r["in_context_full"]["eval_loss"] < r["channel_concat_full"]["eval_loss"]}
    if t3:
        r = t3["rows"]
        n = r.get("naive_dmd")
        taus = sorted(k for k in r if k.startswith("gr_dmd_tau_")) if n else []
        for name in taus:
            g = r[name]  # gr_dmd_over_naive_late is the paper's tau 0.2; every other tau gets its own key
            key = "gr_dmd_over_naive_late" if name == "gr_dmd_tau_0.2" else f"{name}_over_naive_late"
            out[key] = {"late_vq": [g["late_vq"], n["late_vq"]], "late_amp": [g["late_amp"], n["late_amp"]],
                        "holds": g["late_vq"] >= n["late_vq"] and g["late_amp"] >= n["late_amp"]}
    return out


def plot_table3(t3: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    for name, row in t3["rows"].items():
        for ax, key in zip(axes, ("vq_per_chunk", "amp_per_chunk")):
            ax.plot(np.arange(len(row[key])), row[key], "-o", ms=3, label=name)
    for ax, title in zip(axes, ("VQ per chunk", "Amp. per chunk")):
        ax.axvline(3.5, color="grey", ls=":")  # the rollout trains 4 chunks
        ax.set(title=f"{title} ({t3['frames']} frames, {t3['samples']} samples)", xlabel="chunk")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict, plot: str | None = None) -> str:
    lines = []
    for key, title, cols in (("table2", "Table 2: how the conditions enter and what trains (stage 1)", TABLE2_COLUMNS),
                             ("table3", "Table 3: naive DMD vs GR-DMD on long extrapolation (stage 3)",
                              TABLE3_COLUMNS)):
        t = result.get(key)
        if not t:
            continue
        lines += [f"## {title}", "", f"Held-out split, {t['samples']} samples of {t['frames']} frames; every variant "
                  f"trained {t['train_steps']} steps from the same start on the same data.", "",
                  "| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, row in t["rows"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
        if t["missing"]:
            lines += ["", "Not trained: " + ", ".join(t["missing"])]
        if key == "table3" and plot:
            lines += ["", f"![per-chunk VQ and Amp.]({plot})"]
        lines.append("")
    if result.get("goals"):
        lines += ["```json", __import__("json").dumps(result["goals"], indent=1), "```", ""]
    return "\n".join(lines)
