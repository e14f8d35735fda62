"""The tiny world's recipe: every model of the tiny world, trained in order on this machine, resumable.

    python -m fc_jax.tinyworld recipe --workdir=runs/tinyworld [--steps=data,vae,text,latents,base,...]

Steps, each skipped when its output is complete (a stopped run resumes where it stopped):
0. `data`: the tiny-world triplets (`FashionTriplets`) at WORKDIR/data: `data.tinyworld_examples` train records
   of the `tinyworld_vae` config's geometry, an eighth as many eval and held-out ones.
1. `vae`: the `vae` stage (`tinyworld_vae` config) on them in WORKDIR/vae, its EMA parameters exported to
   WORKDIR/vae_raw_params, then calibrated into WORKDIR/vae_params: the per-channel mean and std of its latents
   over `data.calibration_videos` training videos folded into its 1x1 quant convs so that its latents take the Wan
   statistics `normalize_latents` divides by (zero-mean, unit-variance normalised latents, as flow matching
   assumes; reconstructions unchanged, `fc_jax.models.vae.match_latent_statistics`).
2. `text`: the word-level tokenizer (WORKDIR/text/tokenizer.json) and the frozen, seeded, random tiny umT5
   (WORKDIR/text/umt5).
3. `latents`: the triplets encoded with the trained VAE and the text encoder (`fc_jax.data.preencode`, resumable
   by chunks) into a `FashionLatents` data set at WORKDIR/latents (train and eval splits).
4. `base`: the `base` stage (`tinyworld_base` config) on those latents in WORKDIR/base, its EMA parameters
   exported to WORKDIR/base_params.
The method (issue "the method on the tiny world"), each stage from the one before, EMA parameters exported:
5. `sft`: stage 1, the in-context teacher (`tinyworld_sft`) from WORKDIR/base_params -> WORKDIR/sft_params.
6. `teacher_forcing`: stage 2 (`tinyworld_teacher_forcing`) from WORKDIR/sft_params ->
   WORKDIR/teacher_forcing_params.
7. `gr_dmd`: stage 3 (`tinyworld_gr_dmd`: generator from stage 2, critic and real score from stage 1, the tiny
   VQ score of WORKDIR/vae_params's frames, its palette saved as WORKDIR/vq_palette.npz, as the reward) ->
   WORKDIR/student_params (the generator's EMA). Every `train.eval_every` iterations the EMA student streams
   `STUDENT_EVAL_STREAMS` eval-split specs, scored by the tiny world's metrics (WORKDIR/gr_dmd/eval.jsonl:
   `eval/garment`, `eval/id`, ...; `fc_jax.tinyworld.student_eval`), the card's metric per checkpoint.
The light decoder (issue "a light streaming decoder"):
8. `sampler_latents`: `light_decoder_train.sampler_streams` streams of that student on training conditions
   (`fc_jax.tinyworld.sampler_latents`) -> WORKDIR/sampler_latents.npy, the latents it will decode.
9. `light_decoder`: the `light_decoder` stage (`tinyworld_light_decoder` config) distilling WORKDIR/vae_params's
   decoder on WORKDIR/data's clips, part of them with those sampler latents, in WORKDIR/light_decoder, its EMA
   parameters exported to WORKDIR/light_decoder_params.
Each step's wall time is added to WORKDIR/recipe.json (for the model card). A step whose model was carried over
from an earlier run's weights folder (`--carry=vae,light_decoder --carry_from=DIR`, `fc_jax.tinyworld.card.carry_over`)
is skipped: its entry there is the earlier run's, marked `carried_from`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

STEPS = ("data", "vae", "text", "latents", "base", "sft", "teacher_forcing", "gr_dmd", "sampler_latents",
         "light_decoder")
LATENT_SPLITS = ("train", "eval")  # the bench renders the held-out split itself
TEXT_SEED = 0  # the tiny umT5's random initialisation (frozen: never trained)
STUDENT_EVAL_STREAMS = {"full": 8, "smoke": 1}  # eval-split streams per evaluation of the gr_dmd student


def config_name(stage: str, variant: str = "") -> str:
    """The packaged config of recipe stage `stage` (vae | base | light_decoder) at `variant` ("" or "smoke")."""
    return f"tinyworld_{stage}" + (f":{variant}" if variant else "")


def vae_config(workdir: str, variant: str = ""):
    """The recipe's `vae` stage config (`variant` "smoke": the suite's few-step run), reading WORKDIR/data."""
    from fc_jax.config import load_config

    config = load_config(config_name("vae", variant))
    config.data.data_dir = os.path.join(workdir, "data")
    return config


def base_config(workdir: str, variant: str = ""):
    """The recipe's `base` stage config, reading the latents of WORKDIR."""
    from fc_jax.config import load_config

    config = load_config(config_name("base", variant))
    config.data.data_dir = os.path.join(workdir, "latents")
    return config


def light_decoder_config(workdir: str, variant: str = ""):
    """The recipe's `light_decoder` stage config: WORKDIR/data's clips, WORKDIR/vae_params as the teacher, and
    WORKDIR/sampler_latents.npy as the sampler's latents where the config draws some."""
    from fc_jax.config import load_config

    config = load_config(config_name("light_decoder", variant))
    config.data.data_dir = os.path.join(workdir, "data")
    config.light_decoder_train.teacher = os.path.abspath(paths(workdir)["vae_params"])
    if float(config.light_decoder_train.get("sampler_share", 0.0)) > 0:
        config.light_decoder_train.sampler_latents = os.path.abspath(paths(workdir)["sampler_latents"])
    return config


def method_config(stage: str, workdir: str, variant: str = ""):
    """The recipe's config of method stage `stage` (sft | teacher_forcing | gr_dmd), reading WORKDIR/latents and
    initialised from the stage before it."""
    from fc_jax.config import load_config

    p = paths(workdir)
    config = load_config(config_name(stage, variant))
    config.data.data_dir = os.path.join(workdir, "latents")
    absolute = lambda key: os.path.abspath(p[key])
    if stage == "sft":
        config.train.init_from = absolute("base_params")
    elif stage == "teacher_forcing":
        config.train.init_from = absolute("sft_params")
    else:
        config.distill.update(dict(generator_from=absolute("teacher_forcing_params"),
                                   teacher_from=absolute("sft_params"), vae_from=absolute("vae_params"),
                                   reward_from=absolute("vq_palette")))
    return config


def paths(workdir: str) -> dict[str, str]:
    """Where each output lives under WORKDIR."""
    j = lambda *p: os.path.join(workdir, *p)
    return {"vae_run": j("vae"), "vae_raw_params": j("vae_raw_params"), "vae_params": j("vae_params"),
            "triplets": j("data"), "tokenizer": j("text", "tokenizer.json"), "umt5": j("text", "umt5"),
            "latents": j("latents"),
            "base_run": j("base"), "base_params": j("base_params"),
            "light_decoder_run": j("light_decoder"), "light_decoder_params": j("light_decoder_params"),
            "sft_run": j("sft"), "sft_params": j("sft_params"),
            "teacher_forcing_run": j("teacher_forcing"), "teacher_forcing_params": j("teacher_forcing_params"),
            "gr_dmd_run": j("gr_dmd"), "student_params": j("student_params"), "vq_palette": j("vq_palette.npz"),
            "sampler_latents": j("sampler_latents.npy"), "log": j("recipe.json")}


def read_log(workdir: str) -> dict:
    """WORKDIR/recipe.json: {step: {wall_s, ...}} of the steps done so far ({} before the first)."""
    log = paths(workdir)["log"]
    return json.load(open(log)) if os.path.exists(log) else {}


def write_log_entry(workdir: str, step: str, entry: dict) -> None:
    """Set step `step`'s entry of WORKDIR/recipe.json (atomically)."""
    log, done = paths(workdir)["log"], read_log(workdir)
    done[step] = entry
    with open(log + ".tmp", "w") as f:
        json.dump(done, f, indent=1)
    os.replace(log + ".tmp", log)


def _record(workdir: str, step: str, seconds: float, **extra) -> None:
    entry = read_log(workdir).get(step, {"wall_s": 0.0})
    entry["wall_s"] = round(entry["wall_s"] + seconds, 1)
    entry.update(extra)
    write_log_entry(workdir, step, entry)


def train_and_export(config, run_dir: str, params_dir: str, hooks=()) -> dict:
    from fc_jax.training.driver import train
    from fc_jax.training.export import export_parameters

    summary = train(config, run_dir, hooks)
    if summary["preempted"]:
        raise SystemExit(f"stopped at step {summary['step']}; run the recipe again to resume")
    if not os.path.exists(params_dir):
        export_parameters(run_dir, params_dir)  # the stage's default: its EMA parameters
    return summary


def step_data(workdir: str, variant: str) -> dict:
    from fc_jax.data import triplets
    from fc_jax.tinyworld.dataset import write_tinyworld

    p, config = paths(workdir), vae_config(workdir, variant)
    n, v = int(config.data.tinyworld_examples), config.video
    counts = {"train": n, "eval": max(n // 8, 1), "heldout": max(n // 8, 1)}
    if not triplets.FashionTriplets(data_dir=p["triplets"]).is_prepared():
        write_tinyworld(p["triplets"], counts, height=v.height, width=v.width, num_frames=v.num_frames)
    return {"records": counts}


def latent_statistics(params, config, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std [z_dim] of the raw posterior means of the first `count` training videos."""
    from fc_jax.models import vae
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import split_specs

    v = config.video
    moments = jax.jit(lambda p, x: vae.posterior_moments(p, x)[0])
    mus = [np.asarray(moments(params, jnp.asarray(render_sample(spec).video[None], jnp.float32) / 127.5 - 1.0))
           for spec in split_specs("train", count, height=v.height, width=v.width, num_frames=v.num_frames)]
    flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in mus])
    return flat.mean(0), flat.std(0)


def step_vae(workdir: str, variant: str) -> dict:
    from fc_jax.convert.common import load_params, save_params
    from fc_jax.models import vae

    p, config = paths(workdir), vae_config(workdir, variant)
    summary = train_and_export(config, p["vae_run"], p["vae_raw_params"])
    count = int(config.data.calibration_videos)
    if not os.path.exists(p["vae_params"]):
        raw = load_params(os.path.abspath(p["vae_raw_params"]))
        mean, std = latent_statistics(raw, config, count)
        save_params(vae.match_latent_statistics(raw, mean, std), os.path.abspath(p["vae_params"]))
    return {"config": config_name("vae", variant), "steps": summary["step"], "last_metrics": summary["last_metrics"],
            "calibration_videos": count}


def step_text(workdir: str, variant: str) -> dict:
    from fc_jax.convert.common import save_params
    from fc_jax.models import umt5
    from fc_jax.tinyworld.text import write_tokenizer

    p, config = paths(workdir), base_config(workdir, variant)
    write_tokenizer(os.path.dirname(p["tokenizer"]))
    if not os.path.exists(p["umt5"]):
        model = umt5.UMT5Encoder.from_config(config.umt5)
        save_params(umt5.init_params(model, jax.random.key(TEXT_SEED), config.umt5.text_len), p["umt5"])
    return {"seed": TEXT_SEED}


def step_latents(workdir: str, variant: str) -> dict:
    from fc_jax.data import preencode, triplets

    p, config = paths(workdir), base_config(workdir, variant)
    if triplets.FashionLatents(data_dir=p["latents"]).is_prepared():
        return {}
    vae_params, text = preencode.load_encoders(config, p["vae_params"], p["umt5"], p["tokenizer"], False, 0,
                                               jax.local_device_count())
    encoder = preencode.BatchEncoder(vae_params, text, jax.local_devices())
    skipped = preencode.preencode(config, p["triplets"], p["latents"], encoder, LATENT_SPLITS)
    return {"skipped": len(skipped)}


def step_base(workdir: str, variant: str) -> dict:
    p = paths(workdir)
    summary = train_and_export(base_config(workdir, variant), p["base_run"], p["base_params"])
    return {"config": config_name("base", variant), "steps": summary["step"],
            "last_metrics": summary["last_metrics"]}


def step_light_decoder(workdir: str, variant: str) -> dict:
    p = paths(workdir)
    summary = train_and_export(light_decoder_config(workdir, variant), p["light_decoder_run"],
                                p["light_decoder_params"])
    return {"config": config_name("light_decoder", variant), "steps": summary["step"],
            "last_metrics": summary["last_metrics"]}


def _load(workdir: str, key: str) -> dict:
    """The parameters at `paths(workdir)[key]`, as jax arrays."""
    from fc_jax.convert.common import load_params

    return jax.tree.map(jnp.asarray, load_params(os.path.abspath(paths(workdir)[key])))


def _texts(workdir: str, config):
    """An `EmbeddingCache` of WORKDIR's tokenizer and frozen tiny umT5 (`config.umt5`)."""
    from fc_jax.text import EmbeddingCache, TextEncoder, load_tokenizer

    tokenizer = load_tokenizer(paths(workdir)["tokenizer"], config.umt5.text_len)
    return EmbeddingCache(config.umt5.text_len, TextEncoder(config.umt5, _load(workdir, "umt5"), tokenizer, 1))


def step_sampler_latents(workdir: str, variant: str) -> dict:
    from fc_jax.sampling.streaming import StreamingSession
    from fc_jax.tinyworld import sampler_latents

    p = paths(workdir)
    count = int(light_decoder_config(workdir, variant).light_decoder_train.sampler_streams)
    if os.path.isfile(p["sampler_latents"]) and np.load(p["sampler_latents"], mmap_mode="r").shape[0] == count:
        return {"streams": count}
    config = method_config("gr_dmd", workdir, variant)
    texts = _texts(workdir, config)
    session = StreamingSession(config, _load(workdir, "student_params"), _load(workdir, "vae_params"),
                               texts([""])[0])
    sampler_latents.write(p["sampler_latents"], session, texts, count, num_frames=int(config.video.num_frames))
    return {"streams": count}


def student_eval_hook(workdir: str, config, variant: str):
    """The `gr_dmd` stage's evaluation: its EMA student's streams of `STUDENT_EVAL_STREAMS` eval-split specs scored
    by the tiny world's metrics (`fc_jax.tinyworld.student_eval`), with WORKDIR's VAE and text encoder."""
    from fc_jax.tinyworld.student_eval import gr_dmd_hook

    return gr_dmd_hook(config, _load(workdir, "vae_params"), _texts(workdir, config),
                       STUDENT_EVAL_STREAMS[variant or "full"])


def _method_step(stage: str, params_key: str):
    def step(workdir: str, variant: str) -> dict:
        p = paths(workdir)
        config, hooks = method_config(stage, workdir, variant), ()
        if stage == "gr_dmd":
            if not os.path.exists(p["vq_palette"]):  # the reward's parameters
                from fc_jax.tinyworld.metrics import vq_palette_params

                np.savez(p["vq_palette"], **vq_palette_params())
            hooks = (student_eval_hook(workdir, config, variant),)
        summary = train_and_export(config, p[f"{stage}_run"], p[params_key], hooks)
        return {"config": config_name(stage, variant), "steps": summary["step"],
                "last_metrics": summary["last_metrics"]}

    return step


RUNNERS = {"data": step_data, "vae": step_vae, "text": step_text, "latents": step_latents, "base": step_base,
           "sft": _method_step("sft", "sft_params"),
           "teacher_forcing": _method_step("teacher_forcing", "teacher_forcing_params"),
           "gr_dmd": _method_step("gr_dmd", "student_params"), "sampler_latents": step_sampler_latents,
           "light_decoder": step_light_decoder}


def run_recipe(workdir: str, steps=STEPS, variant: str = "") -> dict:
    """Run `steps` (in the recipe's order) under `workdir` with the configs' `variant` ("" or "smoke": a few steps
    at the smallest geometry, the suite's); returns WORKDIR/recipe.json's content."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown recipe step(s) {unknown}; expected some of {list(STEPS)}")
    os.makedirs(workdir, exist_ok=True)
    for name in (s for s in STEPS if s in steps):
        carried = read_log(workdir).get(name, {}).get("carried_from")
        if carried:  # `fc_jax.tinyworld.card.carry_over` put an earlier run's trained model here
            print(f"recipe: {name} carried over from {carried}", file=sys.stderr, flush=True)
            continue
        print(f"recipe: {name} ...", file=sys.stderr, flush=True)
        start = time.time()
        extra = RUNNERS[name](workdir, variant)
        _record(workdir, name, time.time() - start, **extra)
        print(f"recipe: {name} done in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return read_log(workdir)
