"""Shipping a recipe's trained models: the weights folder of `fc_jax.tinyworld.weights`, its model card and curves.

    python -m fc_jax.tinyworld ship --workdir=runs/tinyworld --bench=bench.json [--dst=fc_jax/tinyworld/weights]

`--bench` is the JSON printed by `python -m fc_jax.bench tinyworld --weights=DST` run on the same weights (the
card shows only measured figures: measure, then ship; `ship` without `--bench` writes the weights and a card
that says they are unmeasured, so the bench can run on them).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from fc_jax.tinyworld import recipe, weights

# part -> (the recipe step that trained it, its training curve, its evaluation curve).
CURVES = {"vae": ("vae", "loss", "eval/psnr_db"), "base": ("base", "loss", "eval/loss"),
          "light_decoder": ("light_decoder", "loss", "eval/psnr_vs_full_db"),
          "teacher": ("sft", "loss", "eval/loss"), "student": ("gr_dmd", "critic/loss", "eval/garment")}
# part -> its parameters in the recipe's workdir (`recipe.paths` keys); the DiTs are written in half precision.
SOURCES = {"vae": "vae_params", "base": "base_params", "light_decoder": "light_decoder_params",
           "teacher": "sft_params", "student": "student_params"}
HALF = ("base", "teacher", "student")


def _rare_colour_text(train, frames: str = "their clip") -> str:
    """The card's words for a loss that weighs rare colours (`train.rare_colour_weight` / `_share`; "" without):
    pixels of colours under the share of `frames` weighted 1 + weight."""
    weight = float(train.get("rare_colour_weight", 0.0))
    if not weight:
        return ""
    return f"pixels of colours under {train.rare_colour_share:.0%} of {frames} weighted {1 + weight:g}x"


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def plot_curves(run_dir: str, out_png: str, title: str, train_key: str, eval_key: str) -> None:
    """PNG of the run's training `train_key` per step (raw and a 25-step running mean) beside `eval_key` per
    evaluation (eval.jsonl), or per logged step for a stage that logs it in training (metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if train_key in r]
    evals = [r for r in read_jsonl(os.path.join(run_dir, "eval.jsonl")) if eval_key in r]
    source = "eval split"
    if not evals:
        evals = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if eval_key in r]
        source = "training"
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        steps, values = np.array([r["step"] for r in train]), np.array([r[train_key] for r in train])
        a.plot(steps, values, lw=0.5, alpha=0.4, label=train_key)
        k = min(25, len(values))
        a.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.5, label=f"{k}-step mean")
        a.set_yscale("log")
        a.legend()
    a.set(xlabel="step", title=f"{title}: training {train_key}")
    if evals:
        b.plot([r["step"] for r in evals], [r[eval_key] for r in evals], "o-")
    b.set(xlabel="step", title=f"{title}: {eval_key} ({source})")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def shipped_parts(workdir: str) -> tuple[str, ...]:
    """The recipe's trained parts that `ship` writes: vae and base, and each of light_decoder, teacher and
    student whose parameters the recipe has made."""
    p = recipe.paths(workdir)
    return tuple(part for part in SOURCES if part in ("vae", "base") or os.path.exists(p[SOURCES[part]]))


def _carried_dir(workdir: str) -> str:
    return os.path.join(workdir, "carried")


def carry_over(workdir: str, folder: str, parts) -> dict:
    """Seed WORKDIR with the trained `parts` (some of vae, base, light_decoder, teacher, student) of the weights
    folder `folder` (an earlier recipe's `ship`), so that the recipe retrains only the rest: each part's
    parameters at its recipe path, its step's recipe.json entry (config, steps, wall time) copied from `folder`'s
    card and marked `carried_from` (the recipe skips that step), its curve and evaluations kept for `ship`
    (WORKDIR/carried/). Returns {step: entry} of the carried steps."""
    from fc_jax.convert.common import save_params

    unknown = [part for part in parts if part not in SOURCES]
    if unknown:
        raise ValueError(f"cannot carry {unknown}: expected some of {list(SOURCES)}")
    source = weights.card(folder)
    missing = [part for part in parts if part not in source.get("configs", {})]
    if missing:
        raise FileNotFoundError(f"{folder} has no trained {missing} (its card.json lists "
                                f"{sorted(source.get('configs', {}))})")
    p, carried = recipe.paths(workdir), _carried_dir(workdir)
    os.makedirs(carried, exist_ok=True)
    entries = {}
    for part in parts:
        step = CURVES[part][0]
        if not os.path.exists(p[SOURCES[part]]):
            save_params(weights.load_part(part, folder), os.path.abspath(p[SOURCES[part]]))
        curve = os.path.join(folder, "curves", f"{part}.png")
        if os.path.exists(curve):
            shutil.copy(curve, os.path.join(carried, f"{part}.png"))
        with open(os.path.join(carried, f"{part}.eval.json"), "w") as f:
            json.dump(source.get("evaluations", {}).get(part, []), f)
        entries[step] = {**source["recipe"][step], "carried_from": os.path.abspath(folder)}
        recipe.write_log_entry(workdir, step, entries[step])
    return entries


def _light_decoder_extras(train) -> str:
    """The model card's words for a light decoder's training extras: latent noise, sampler latents, rare-colour
    weights ("" for none)."""
    noise = float(train.get("latent_noise", 0.0))
    text = f"; its latents perturbed by sigma ~ U(0, {noise}) of noise, decoded so by the VAE" if noise else ""
    share = float(train.get("sampler_share", 0.0))
    if share:
        text += (f"; {share:.0%} of the clips with the student's own latents ({train.sampler_streams} streams on "
                 "training conditions, the recipe's sampler_latents step) in place of encoded ones")
    rare = _rare_colour_text(train, "the teacher's clip")
    return text + (f"; {rare}" if rare else "")


def _curve_and_evaluations(workdir: str, part: str, out_png: str) -> list[dict]:
    """Draw part `part`'s curves to `out_png` and return its evaluations: from its run, or as carried over."""
    step = CURVES[part][0]
    if recipe.read_log(workdir).get(step, {}).get("carried_from"):
        carried = _carried_dir(workdir)
        if os.path.exists(os.path.join(carried, f"{part}.png")):
            shutil.copy(os.path.join(carried, f"{part}.png"), out_png)
        return json.load(open(os.path.join(carried, f"{part}.eval.json")))
    run = recipe.paths(workdir)[f"{step}_run"]
    plot_curves(run, out_png, part, *CURVES[part][1:])
    return read_jsonl(os.path.join(run, "eval.jsonl"))


def write_weights(workdir: str, dst: str, bench: dict | None = None) -> dict:
    """Write the recipe's trained parts (safetensors: the DiTs in float16, the rest float32), the tokenizer,
    curves, `card.json` and `MODEL_CARD.md` into `dst` (replaced); returns the card."""
    from fc_jax.convert.common import load_params

    p = recipe.paths(workdir)
    parts = shipped_parts(workdir)
    tmp = dst.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "curves"))
    for part, source in [(part, p[SOURCES[part]]) for part in parts] + [("umt5", p["umt5"])]:
        weights.save_tree(load_params(os.path.abspath(source)), weights.part_path(part, tmp),
                          np.float16 if part in HALF else np.float32)
    shutil.copy(p["tokenizer"], weights.part_path("tokenizer", tmp))
    evaluations = {part: _curve_and_evaluations(workdir, part, os.path.join(tmp, "curves", f"{part}.png"))
                   for part in parts}
    log = recipe.read_log(workdir)
    card = {"recipe": log, "configs": {part: log[CURVES[part][0]]["config"] for part in parts},
            "text_seed": recipe.TEXT_SEED, "metrics": bench or {}, "evaluations": evaluations}
    with open(os.path.join(tmp, "card.json"), "w") as f:
        json.dump(card, f, indent=1)
    with open(os.path.join(tmp, "MODEL_CARD.md"), "w") as f:
        f.write(model_card(card, weights.folder_size(tmp)))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return card


def model_card(card: dict, size: int) -> str:
    """The Markdown model card of `card` (card.json's content), the recipe read off the configs."""
    from fc_jax.tinyworld.text import caption_vocabulary

    from fc_jax.config import load_config

    r, m = card["recipe"], card["metrics"]
    v, b = load_config(card["configs"]["vae"]), load_config(card["configs"]["base"])
    wall = {step: r[step].get("wall_s") for step in recipe.STEPS if step in r}
    rare = _rare_colour_text(v.vae_train)
    lines = [
        "# The tiny world's models", "",
        f"Trained on this project's 2-core CPU by `python -m fc_jax.tinyworld recipe` (configs "
        f"`{card['configs']['vae']}`, `{card['configs']['base']}`); measured by `python -m fc_jax.bench "
        "tinyworld` on the held-out split (combinations never seen in training).", "",
        f"- Files: {', '.join(f'`{s}.safetensors`' for s in (*card['configs'], 'umt5'))} (the DiTs "
        f"{', '.join(h for h in HALF if h in card['configs'])} in float16, the rest float32), `tokenizer.json`; "
        f"{size / 2**20:.1f} MiB in all.",
        f"- VAE (the Wan2.2 VAE architecture, width {v.vae.encoder_dim}, {v.vae.encoder_res_blocks} / "
        f"{v.vae.decoder_res_blocks} residual blocks per encoder / decoder stage; 48-channel latents, 16x spatial, "
        f"4x temporal): {r.get('vae', {}).get('steps', '?')} steps of {v.train.global_batch} "
        f"clip{'s' if v.train.global_batch != 1 else ''} "
        f"({v.vae_train.clip_frames} frames, {tuple(v.vae_train.crop)} windows), L1 + {v.vae_train.mse_weight} MSE "
        f"{f'({rare}) ' if rare else ''}+ {v.vae_train.kl_weight} KL, posterior log-variance started at "
        f"{v.vae_train.get('logvar_init', 'the random init')}, Adam, {v.optim.schedule} learning rate from "
        f"{v.optim.lr}; EMA "
        f"{v.train.ema_decay} shipped.",
        f"- Text: a word-level tokenizer over the captions' {len(caption_vocabulary())} words, a tiny umT5 "
        f"({b.umt5.num_layers} layers, {b.umt5.d_model} wide) at seed {card['text_seed']}, frozen (never trained).",
        f"- Base (WanDiT, {b.model.num_layers} layers, {b.model.dim} wide, TI2V: text + first frame -> "
        f"{b.video.num_frames} frames): {r.get('base', {}).get('steps', '?')} steps of {b.train.global_batch} "
        f"videos, flow matching (shift {b.sampling.shift}), {b.train.text_drop_prob:.0%} text dropout, "
        f"{b.optim.schedule} learning rate from {b.optim.lr}; EMA {b.train.ema_decay} shipped.",
    ]
    if "light_decoder" in card["configs"]:
        d = load_config(card["configs"]["light_decoder"])
        lines.append(
            f"- Light decoder (`fc_jax.models.light_decoder`, {d.light_decoder.width} wide, {d.light_decoder.blocks} "
            f"memory blocks, upsampling widths {tuple(d.light_decoder.up_widths)}): "
            f"{r.get('light_decoder', {}).get('steps', '?')} steps of {d.train.global_batch} clips distilled from "
            f"the VAE decoder (+ {d.light_decoder_train.real_weight} x the real frames"
            f"{_light_decoder_extras(d.light_decoder_train)}), {d.optim.schedule} "
            f"learning rate from {d.optim.lr}; EMA {d.train.ema_decay} shipped.")
    if "teacher" in card["configs"]:
        t = load_config(card["configs"]["teacher"])
        lines.append(
            f"- Teacher (stage 1, in-context SFT from the base: [reference, garment, noisy video] tokens, the "
            f"reference wearing another garment): {r.get('sft', {}).get('steps', '?')} steps of "
            f"{t.train.global_batch}, {t.train.text_drop_prob:.0%} text dropout, mixed captions "
            f"({t.train.dynamic_caption_prob:.0%} dynamic only), {t.optim.schedule} learning rate from {t.optim.lr}; "
            f"EMA {t.train.ema_decay} shipped.")
    if "student" in card["configs"]:
        g = load_config(card["configs"]["student"])
        lines.append(
            f"- Student (stage 2, teacher forcing, {r.get('teacher_forcing', {}).get('steps', '?')} steps; stage 3, "
            f"{'GR-DMD' if g.distill.reward != 'none' else 'DMD'} with the self-forcing rollout over "
            f"{g.distill.num_chunks} chunks of {g.student.chunk_frames} latent frames, reward {g.distill.reward}, "
            f"tau {g.distill.temperature}, {r.get('gr_dmd', {}).get('steps', '?')} iterations of {g.train.global_batch}; "
            f"{len(g.sampling.student_timesteps)} denoising steps per chunk): the generator's EMA "
            f"{g.distill.ema_decay} shipped.")
    carried = {step: entry["carried_from"] for step, entry in r.items() if entry.get("carried_from")}
    if carried:
        lines.append(f"- Carried over, not retrained, from an earlier run's weights (its recipe entry, curves and "
                     f"evaluations kept): {', '.join(f'`{s}`' for s in carried)}.")
    lines += [f"- Wall time per recipe step (s): {json.dumps(wall)}.", "", "## Measured", ""]
    if m:
        lines += ["```json", json.dumps(m, indent=1), "```"]
    else:
        lines += ["Not measured yet: run `python -m fc_jax.bench tinyworld --weights=<this folder>`."]
    lines += ["", "## Curves", ""]
    for stage in card["configs"]:
        lines += [f"![{stage}](curves/{stage}.png)", ""]
    return "\n".join(lines)
