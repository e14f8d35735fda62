"""`python -m fc_jax.bench tinyworld [--what=vae,base,tables] [--weights=DIR] [--vae_samples=16] [--base_samples=24]`:
the tiny world's trained models measured on its held-out split (combinations never seen in training), on this
machine. Default weights: the ones shipped in the package (`fc_jax.tinyworld.weights`).

Prints one JSON object:
- with `vae`: `vae_psnr_db` (mean over held-out videos of the PSNR, peak 255, of the whole 45-frame video
  encoded and decoded, posterior mean, against the render), `vae_psnr_db_min`, `vae_psnr_db_figure` and
  `vae_psnr_db_background` (over the figure's pixels, over the background's), `vae_samples`, `vae_params`,
  `vae_step_s` (one training step of the `vae` stage at its config, median of timed steps after a warm-up);
- with `base`: `base_motion_accuracy` (0-1: fraction of held-out samples whose generated video moves as the
  caption says, `motion/direction_ok` of `fc_jax.tinyworld.metrics`: TI2V from the first frame and the full
  caption, the config's UniPC steps and guidance, decoded by the tiny VAE; a figure that never moves scores
  the share of in-place captions), `base_motion_accuracy_vae_ceiling` (the same score of the ground-truth
  videos encoded and decoded by the tiny VAE: what perfect latents would score), `base_walk_direction_accuracy`
  (the walks alone: left / right as said),
  `base_motion_alignment` (mean `motion_alignment`), per-motion accuracy, `base_samples`, `base_params`,
  `base_step_s` (as `vae_step_s`);
- with `tables`: the paper's tables on the held-out split (`fc_jax.bench.tinyworld_tables`: Table 1, the
  switching table, the goal figures under `goals`), `--table_samples` samples, teacher at `--teacher_steps`;
  `--report=FILE` also writes them as Markdown;
- with `table2` / `table3`: the paper's Tables 2 and 3 (`fc_jax.bench.tinyworld_ablations`) on the variants
  `python -m fc_jax.tinyworld ablations --workdir=DIR` trained (`--ablations=DIR`), with their comparisons under
  `ablation_goals`; with `--report`, the per-chunk curves of Table 3 (PNG beside the report);
- with `kv`: the KV-edit analysis (`fc_jax.bench.kv_analysis`): attention probes before and after a switch
  under refresh only / refresh + withdraw / the full method, the paper's claim checked on them, and the example
  edits' switch metrics beside the paper's method (`--table_samples` samples); with `--report`, its section
  and the per-layer and per-chunk plots (PNG beside the report);
- `recipe_wall_s`: the wall time of each recipe step, from the weights' `card.json` where it has one.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import emit

FLAGS = flags.FlagValues()
flags.DEFINE_list("what", ["vae", "base"], "what to measure: vae, base, tables, table2, table3, kv",
                  flag_values=FLAGS)
flags.DEFINE_string("ablations", None, "the recipe folder where `python -m fc_jax.tinyworld ablations` trained the "
                    "variants of Tables 2 and 3", flag_values=FLAGS)
flags.DEFINE_enum("ablations_variant", "", ["", "smoke"], "the configs' variant the ablations trained at",
                  flag_values=FLAGS)
flags.DEFINE_string("weights", None, "tiny-world weights folder (default: the shipped weights)", flag_values=FLAGS)
flags.DEFINE_integer("vae_samples", 16, "held-out videos for the VAE's PSNR", flag_values=FLAGS)
flags.DEFINE_integer("base_samples", 24, "held-out samples for the base model's motion accuracy", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "noise seed of the base model's samples", flag_values=FLAGS)
flags.DEFINE_integer("step_repeats", 3, "timed training steps per stage", flag_values=FLAGS)
flags.DEFINE_bool("step_time", True, "also time one training step of each stage", flag_values=FLAGS)
flags.DEFINE_string("frames_dir", None, "also save each base sample as a PNG strip (render above, sample below; "
                    "five frames) here, to look at", flag_values=FLAGS)

flags.DEFINE_integer("table_samples", 8, "held-out samples per table row", flag_values=FLAGS)
flags.DEFINE_integer("teacher_steps", 50, "UniPC steps of the teacher and the base model in the tables",
                     flag_values=FLAGS)
flags.DEFINE_string("report", None, "Markdown file for the tables and the KV analysis", flag_values=FLAGS)

WHAT = ("vae", "base", "tables", "table2", "table3", "kv")


def heldout_samples(count: int, config):
    """The first `count` held-out specs at the config's geometry and their renders."""
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import split_specs

    v = config.video
    specs = split_specs("heldout", count, height=v.height, width=v.width, num_frames=v.num_frames)
    return [(s, render_sample(s)) for s in specs]


def to_model_range(video_u8: np.ndarray) -> jax.Array:
    return jnp.asarray(video_u8, jnp.float32) / 127.5 - 1.0


def to_uint8(video) -> np.ndarray:
    return np.asarray(jnp.round((jnp.clip(video, -1, 1) + 1) * 127.5)).astype(np.uint8)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean(np.square(a.astype(np.float64) - b.astype(np.float64))))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def vae_figures(weights: str | None, samples: int) -> dict:
    """PSNR of encode + decode on held-out videos."""
    from fc_jax.tinyworld.weights import configs, load_part

    config = configs(weights)["vae"]
    params = jax.tree.map(jnp.asarray, load_part("vae", weights))
    scores, figure, background = [], [], []
    for _, sample in heldout_samples(samples, config):
        recon = reconstruct(params, sample.video)
        on_background = sample.parts == 0
        scores.append(psnr_db(recon, sample.video))
        figure.append(psnr_db(recon[~on_background], sample.video[~on_background]))
        background.append(psnr_db(recon[on_background], sample.video[on_background]))
    return {"vae_psnr_db": round(float(np.mean(scores)), 3), "vae_psnr_db_min": round(float(np.min(scores)), 3),
            "vae_psnr_db_figure": round(float(np.mean(figure)), 3),
            "vae_psnr_db_background": round(float(np.mean(background)), 3),
            "vae_samples": len(scores), "vae_params": int(sum(x.size for x in jax.tree.leaves(params)))}


def reconstruct(vae_params, video_u8: np.ndarray) -> np.ndarray:
    """A uint8 video [F, H, W, 3] encoded (posterior mean) and decoded by the VAE, as uint8."""
    from fc_jax.models import vae

    return to_uint8(vae.decode(vae_params, vae.encode_video(vae_params, to_model_range(video_u8[None])))[0])


def base_videos(config, weights: str | None, vae_params, samples, seed: int):
    """TI2V samples of the base model: for each (spec, render), the uint8 video [F, H, W, 3] decoded by
    `vae_params`."""
    from fc_jax.models import dit, vae
    from fc_jax.sampling.base import sample_ti2v
    from fc_jax.text import EmbeddingCache
    from fc_jax.tinyworld.spec import full_caption
    from fc_jax.tinyworld.weights import load_part, text_encoder

    model = dit.build_model(config)
    params = jax.tree.map(jnp.asarray, load_part("base", weights))
    texts = EmbeddingCache(config.umt5.text_len, text_encoder(config, weights))
    negative, _ = texts([config.sampling.negative_prompt])
    v = config.video
    shape = ((v.num_frames - 1) // 4 + 1, v.height // 16, v.width // 16, config.model.in_channels)
    for i, (spec, sample) in enumerate(samples):
        first = vae.encode_image(vae_params, to_model_range(sample.video[:1]))
        context, _ = texts([full_caption(spec)])
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), (1, *shape), jnp.float32)
        latents = sample_ti2v(model, params, first, noise, jnp.asarray(context), jnp.asarray(negative),
                              num_steps=int(config.sampling.teacher_steps), shift=float(config.sampling.shift),
                              guidance_scale=float(config.sampling.guidance_scale),
                              sigma_grid=config.sampling.teacher_sigmas)
        yield spec, sample, to_uint8(vae.decode(vae_params, latents)[0])


def save_strip(path: str, render: np.ndarray, video: np.ndarray) -> None:
    """PNG of five evenly spaced frames: the render above, the generated video below."""
    from PIL import Image

    picks = np.linspace(0, len(video) - 1, 5).round().astype(int)
    rows = [np.concatenate(list(v[picks]), axis=1) for v in (render, video)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def base_figures(weights: str | None, samples: int, seed: int, frames_dir: str | None = None) -> dict:
    """Motion accuracy of TI2V samples on held-out captions."""
    from fc_jax.tinyworld.metrics import motion_metrics
    from fc_jax.tinyworld.weights import configs, load_part

    config = configs(weights)["base"]
    vae_params = jax.tree.map(jnp.asarray, load_part("vae", weights))
    ok, ceiling, align, per_motion = [], [], [], {}
    for spec, sample, video in base_videos(config, weights, vae_params, heldout_samples(samples, config), seed):
        m = motion_metrics(video, spec, ground_truth=sample)
        reconstructed = reconstruct(vae_params, sample.video)
        ceiling.append(motion_metrics(reconstructed, spec, ground_truth=sample)["direction_ok"])
        if frames_dir:
            os.makedirs(frames_dir, exist_ok=True)
            save_strip(os.path.join(frames_dir, f"base_{spec.seed}_{spec.motion.kind}.png"), sample.video, video)
        ok.append(m["direction_ok"])
        align.append(m["motion_alignment"])
        per_motion.setdefault(spec.motion.kind, []).append(m["direction_ok"])
    count = int(sum(x.size for x in jax.tree.leaves(load_part("base", weights))))
    walks = per_motion.get("walk_left", []) + per_motion.get("walk_right", [])
    return {"base_motion_accuracy": round(float(np.mean(ok)), 4),
            "base_walk_direction_accuracy": round(float(np.mean(walks)), 4) if walks else None,
            "base_motion_accuracy_vae_ceiling": round(float(np.mean(ceiling)), 4),
            "base_motion_alignment": round(float(np.mean(align)), 4),
            "base_motion_accuracy_by_motion": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_motion.items())},
            "base_samples": len(ok), "base_params": count}


def step_seconds(config, repeats: int) -> float:
    """Median seconds of one compiled training step of `config`'s stage on random batches (this machine)."""
    from fc_jax.training.setup import setup

    s = setup(config)
    state = s.stage.initial_state(s)
    step = s.stage.compile(s)
    rng = np.random.default_rng(0)

    def batch():
        shapes = s.stage.abstract_batch(s)
        host = {k: (rng.integers(0, 256, a.shape).astype(a.dtype) if a.dtype == np.uint8
                    else rng.standard_normal(a.shape).astype(a.dtype)) for k, a in shapes.items()}
        return {k: jax.device_put(v, shapes[k].sharding) for k, v in host.items()}

    state, _ = step(state, batch())
    times = []
    for _ in range(repeats):
        b = batch()
        start = time.perf_counter()
        state, metrics = step(state, b)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)), 3)


def ablation_figures(weights: str) -> tuple[dict, str]:
    """Tables 2 and 3 as asked by --what, their comparisons, and their Markdown section (+ the curves' PNG)."""
    from fc_jax.bench import tinyworld_ablations as ta
    from fc_jax.bench.tinyworld_tables import TinyWorld

    prog = "python -m fc_jax.bench tinyworld"
    if not FLAGS.ablations:
        cli.fail(prog, "--what=table2/table3 score trained variants: give --ablations=DIR, the folder `python -m "
                       "fc_jax.tinyworld ablations --workdir=DIR` trained them in")
    if not os.path.isdir(os.path.join(FLAGS.ablations, "ablations")):
        cli.fail(prog, f"--ablations={FLAGS.ablations}: no ablations/ folder there; run `python -m fc_jax.tinyworld "
                       f"ablations --workdir={FLAGS.ablations}` first")
    tw = TinyWorld.load(weights)
    out = {}
    if "table2" in FLAGS.what:
        out["table2"] = ta.table2(tw, FLAGS.ablations, FLAGS.table_samples, FLAGS.seed, FLAGS.teacher_steps,
                                  FLAGS.ablations_variant)
    if "table3" in FLAGS.what:
        out["table3"] = ta.table3(tw, FLAGS.ablations, FLAGS.table_samples, FLAGS.seed, FLAGS.ablations_variant)
    out["ablation_goals"] = ta.goals(out.get("table2"), out.get("table3"))
    plot = None
    if FLAGS.report and out.get("table3", {}).get("rows"):
        path = os.path.splitext(FLAGS.report)[0] + "_table3_chunks.png"
        ta.plot_table3(out["table3"], path)
        plot = os.path.basename(path)
    return out, ta.markdown({**out, "goals": out["ablation_goals"]}, plot)


def kv_figures(weights: str) -> tuple[dict, str]:
    """The KV analysis and its Markdown section; with --report, its plots beside the report."""
    from fc_jax.bench import kv_analysis

    with cli.user_errors("python -m fc_jax.bench tinyworld"):
        try:
            result = kv_analysis.kv_analysis(weights, FLAGS.table_samples, FLAGS.seed)
        except FileNotFoundError as e:
            raise cli.UserError(str(e)) from None
    plots = {}
    if FLAGS.report:
        stem = os.path.splitext(FLAGS.report)[0]
        for title, draw, suffix in (("per layer", kv_analysis.plot_layers, "_probes_layers.png"),
                                    ("per chunk", kv_analysis.plot_chunks, "_probes_chunks.png")):
            draw(result["probes"], stem + suffix)
            plots[f"attention mass {title}"] = os.path.basename(stem + suffix)
    return result, kv_analysis.markdown(result, plots)


def main(argv: list[str] | None = None) -> None:
    cli.parse(FLAGS, "python -m fc_jax.bench tinyworld", argv, description=__doc__.split("\n\n")[0])
    unknown = [w for w in FLAGS.what if w not in WHAT]
    if unknown:
        cli.fail("python -m fc_jax.bench tinyworld", f"--what: unknown {unknown}; expected some of {list(WHAT)}")
    from fc_jax.tinyworld.weights import SHIPPED, card, configs

    out = {"weights": FLAGS.weights or SHIPPED, "heldout_split": "heldout"}
    report = []  # Markdown sections for --report
    trained_with = configs(FLAGS.weights)
    if "vae" in FLAGS.what:
        out.update(vae_figures(FLAGS.weights, FLAGS.vae_samples))
        if FLAGS.step_time:
            out["vae_step_s"] = step_seconds(trained_with["vae"], FLAGS.step_repeats)
    if "base" in FLAGS.what:
        out.update(base_figures(FLAGS.weights, FLAGS.base_samples, FLAGS.seed, FLAGS.frames_dir))
        if FLAGS.step_time:
            config = trained_with["base"]
            config.data.synthetic = True  # the step's timing needs no data set
            out["base_step_s"] = step_seconds(config, FLAGS.step_repeats)
    if "tables" in FLAGS.what:
        from fc_jax.bench.tinyworld_tables import markdown, tables

        with cli.user_errors("python -m fc_jax.bench tinyworld"):
            try:
                result = tables(out["weights"], FLAGS.table_samples, FLAGS.seed, FLAGS.teacher_steps)
            except FileNotFoundError as e:
                raise cli.UserError(str(e)) from None
        out["tables"] = result
        out.update(result["goals"])
        report.append(markdown(result))
    if {"table2", "table3"} & set(FLAGS.what):
        result, section = ablation_figures(out["weights"])
        out.update(result)
        report.append(section)
    if "kv" in FLAGS.what:
        out["kv"], section = kv_figures(out["weights"])
        report.append(section)
    if FLAGS.report:
        with open(FLAGS.report, "w") as f:
            f.write("\n".join(report))
    recipe_log = card(FLAGS.weights).get("recipe")
    if recipe_log:
        out["recipe_wall_s"] = {k: v.get("wall_s") for k, v in recipe_log.items()}
    emit(out)
