"""The paper's tables on the tiny world (`python -m fc_jax.bench tinyworld --what=tables`): every row on the same
held-out samples (combinations never seen in training), fixed seeds, this CPU, side by side in one run.

- Table 1 (`table1`): the base model's image-to-video from the reference (no garment condition: the lower
  bound), the in-context teacher (`teacher_steps` UniPC steps, bidirectional, text guidance) and the streaming
  student (4 steps per chunk; with weights that hold a light decoder also `student_light_decoder`, the same
  streams decoded by it, the real-time path), each scored by every tiny-world metric (`fc_jax.tinyworld.
  metrics.evaluate`, averaged over samples) plus frames per second (median seconds per video after the first,
  which compiles); and `vae_ceiling`, the ground truth encoded and decoded by the tiny VAE (what perfect latents
  would score).
- Switching (`switching`): the student with the full rescheduling and with each part removed (no refresh /
  no withdraw / no disentangle) and a keep-frames variant, on one switch (45 frames, switch at 21) and on three
  successive switches (93 frames, at 21, 45 and 69; each segment scored as its own switch): latency, leakage,
  the new garment's share of the slot over the chunk after the switch, continuity ratio, the new garment's
  consistency and identity after the switch; on one switch also `vae_ceiling`, the switching ground truth
  encoded and decoded by the tiny VAE.
- Tables 2 and 3 need their variants trained (the same steps and data per table): `fc_jax.bench.
  tinyworld_ablations` scores them (`--what=table2,table3`); `missing` says so.

`goals(...)`: the issue's goal figures, each a measured number (`student_light_decoder_over_teacher_fps` beside
`student_over_teacher_fps`: the student as it streams in real time, against the teacher with the VAE decoder).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.tinyworld.spec import full_caption

SWITCH_VARIANTS = {  # name -> SwitchOptions fields
    "full": {}, "no_refresh": {"refresh": False}, "no_withdraw": {"withdraw": False},
    "no_disentangle": {"disentangle": False}, "keep_3_frames": {"keep_frames": 3},
}
ONE_SWITCH = (45, (21,))  # (frames, switch frames)
THREE_SWITCHES = (93, (21, 45, 69))
SWITCH_KEYS = ("latency", "switched", "leakage", "new_share_chunk", "continuity_ratio", "identity_after")


def mean_rows(rows: list[dict]) -> dict:
    """The mean of each key over `rows` (dicts of floats), rounded to 4 places."""
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


@dataclasses.dataclass
class TinyWorld:
    """The weights folder's parts and configs, the text cache, and the held-out specs of the tables."""

    folder: str
    configs: dict
    params: dict
    texts: object

    @classmethod
    def load(cls, folder: str) -> "TinyWorld":
        from fc_jax.text import EmbeddingCache
        from fc_jax.tinyworld import weights

        configs = weights.configs(folder)
        params = {p: jax.tree.map(jnp.asarray, weights.load_part(p, folder))
                  for p in ("vae", "base", "teacher", "student", "light_decoder") if p in configs}
        student = configs["student"]
        return cls(folder, configs, params, EmbeddingCache(student.umt5.text_len, weights.text_encoder(student,
                                                                                                      folder)))

    def context(self, caption: str) -> jax.Array:
        return jnp.asarray(self.texts([caption])[0])

    def specs(self, count: int, frames: int):
        from fc_jax.tinyworld.spec import split_specs

        v = self.configs["student"].video
        return list(split_specs("heldout", count, height=v.height, width=v.width, num_frames=frames))


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def _sample_then_decode(sample, decode) -> tuple:
    """(video, seconds end to end, seconds of the sampler alone) of `decode(sample())`."""
    latents, sampling = _timed(sample)
    video, decoding = _timed(lambda: decode(latents))
    return video, sampling + decoding, sampling


def _timed_stream(session, frames: int, reference, garment, context) -> tuple:
    """(uint8 video, seconds end to end, seconds of the sampler alone) of one student stream of `frames` from the
    encoded conditions (the teacher and the base get them too; their encoding is timed in no row)."""
    from fc_jax.sampling.frames import chunk_count

    def stream():
        session.start_from_latents(reference, garment, context)
        return np.concatenate(list(session.stream(frames, progress=False)))

    def latents_only():  # the same stream without its decoder
        session.start_from_latents(reference, garment, context)
        return [session.next_latents() for _ in range(chunk_count(frames, session.spec.chunk_frames))]

    sampling = _timed(latents_only)[1]
    return (*_timed(stream), sampling)


def _steady(seconds: list[float]) -> float:
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def _row(made, specs, truths) -> dict:
    """Mean metrics of the generated videos `made` [(video, seconds end to end[, seconds of the sampler alone])]
    and their frames per second (median after the first video): `fps` end to end, `sampler_fps` without the
    decoder where the sampler was timed alone."""
    from fc_jax.tinyworld.metrics import evaluate

    rows = [evaluate(video, spec, ground_truth=truth) for (video, *_), spec, truth in zip(made, specs, truths)]
    steady = _steady([m[1] for m in made])
    out = mean_rows(rows)
    out["fps"] = round(specs[0].num_frames / steady, 3)
    out["seconds_per_video"] = round(steady, 3)
    if all(len(m) > 2 for m in made):
        out["sampler_fps"] = round(specs[0].num_frames / _steady([m[2] for m in made]), 3)
    return out


@dataclasses.dataclass
class SamplerInputs:
    """Per held-out sample the sampler's inputs (the same for every row of a table), and what the samplers share:
    `samples` [(noise [1, F', h, w, C], reference latent, garment latent, context)], `options` (UniPC steps,
    shift, guidance, sigma grid), `negative` (the unconditional text), `decode` (latents -> uint8 video)."""

    samples: list
    options: dict
    negative: object
    decode: object


def sampler_inputs(tw: TinyWorld, specs, truths, seed: int, teacher_steps: int) -> SamplerInputs:
    """The 45-frame samplers' inputs of `specs` (their renders `truths`): noise drawn from (seed, sample index),
    the reference and garment images encoded by the tiny VAE, the full caption's embedding."""
    from fc_jax.images import garment_image, reference_image, to_uint8
    from fc_jax.models import vae

    cfg = tw.configs["student"]
    v = cfg.video
    vae_params = tw.params["vae"]
    encode = jax.jit(lambda img: vae.encode_image(vae_params, img[None]))
    decode = jax.jit(lambda z: vae.decode(vae_params, z))
    shape = ((ONE_SWITCH[0] - 1) // 4 + 1, v.height // 16, v.width // 16, cfg.model.in_channels)
    samples = []
    for i, (spec, truth) in enumerate(zip(specs, truths)):
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), (1, *shape), jnp.float32)
        samples.append((noise, encode(jnp.asarray(reference_image(truth.reference, v.height, v.width))),
                        encode(jnp.asarray(garment_image(truth.garment, v.height, v.width))),
                        tw.context(full_caption(spec))))
    options = dict(num_steps=teacher_steps, shift=float(cfg.sampling.shift),
                   guidance_scale=float(cfg.sampling.guidance_scale), sigma_grid=cfg.sampling.teacher_sigmas)
    return SamplerInputs(samples, options, tw.context(cfg.sampling.negative_prompt),
                         lambda z: to_uint8(decode(z)[0]))


def teacher_videos(model, params, inputs: SamplerInputs) -> list:
    """[(uint8 video, seconds, seconds of the sampler alone)] of an in-context (or channel-concat) teacher on
    every sample of `inputs`."""
    from fc_jax.sampling.teacher import sample_teacher

    return [_sample_then_decode(lambda: sample_teacher(model, params, ref, gar, noise, context, inputs.negative,
                                                       **inputs.options), inputs.decode)
            for noise, ref, gar, context in inputs.samples]


def table1(tw: TinyWorld, samples: int, seed: int, teacher_steps: int) -> dict:
    """Base I2V from the reference, teacher and student on `samples` held-out 45-frame specs."""
    from fc_jax.models import dit
    from fc_jax.sampling.base import sample_ti2v
    from fc_jax.sampling.streaming import StreamingSession
    from fc_jax.tinyworld.render import render_sample

    student_cfg = tw.configs["student"]
    specs = tw.specs(samples, ONE_SWITCH[0])
    truths = [render_sample(s) for s in specs]
    inputs = sampler_inputs(tw, specs, truths, seed, teacher_steps)
    runs = {"base_i2v": [], "teacher": [], "student": []}
    if "base" in tw.params:
        base = dit.build_model(tw.configs["base"])
        runs["base_i2v"] = [_sample_then_decode(lambda: sample_ti2v(
            base, tw.params["base"], ref, noise, context, inputs.negative, **inputs.options), inputs.decode)
            for noise, ref, _, context in inputs.samples]
    if "teacher" in tw.params:
        runs["teacher"] = teacher_videos(dit.build_model(tw.configs["teacher"]), tw.params["teacher"], inputs)
    decoders = {"student": {}}
    if "light_decoder" in tw.params:  # the real-time path: the same stream through the light decoder
        runs["student_light_decoder"] = []
        decoders["student_light_decoder"] = dict(decoder="light", light_decoder_params=tw.params["light_decoder"])
    for name, decoder in decoders.items():
        session = StreamingSession(student_cfg, tw.params["student"], tw.params["vae"], inputs.negative, seed=seed,
                                   **decoder)
        for spec, (_, ref, gar, context) in zip(specs, inputs.samples):
            runs[name].append(_timed_stream(session, spec.num_frames, ref, gar, context))
    rows = {name: _row(made, specs, truths) for name, made in runs.items() if made}
    rows["vae_ceiling"] = vae_ceiling_row(tw.params["vae"], specs, truths)
    return {"rows": rows, "samples": samples, "frames": ONE_SWITCH[0], "teacher_steps": teacher_steps,
            "student_steps": len(student_cfg.sampling.student_timesteps)}


def vae_ceiling_row(vae_params, specs, truths) -> dict:
    """Mean metrics of the ground-truth videos encoded and decoded by the tiny VAE: what a model whose latents
    were perfect would score, the ceiling every generated row is read against (no frame rate)."""
    from fc_jax.bench.tinyworld import reconstruct
    from fc_jax.tinyworld.metrics import evaluate

    return mean_rows([evaluate(reconstruct(vae_params, truth.video), spec, ground_truth=truth)
                      for spec, truth in zip(specs, truths)])


def switch_ceiling(vae_params, cases, chunk_frames: int) -> dict:
    """The switch metrics of the one-switch ground truth (the render switching garment at the switch frame)
    encoded and decoded by the tiny VAE: the switch row a model with perfect latents would reach."""
    from fc_jax.bench.tinyworld import reconstruct
    from fc_jax.tinyworld.render import render_sample

    rows = []
    for spec, reference, _, garments, segments in cases:
        (seg, _, _), = segments
        truth = render_sample(dataclasses.replace(spec, target=garments[0], switch_frame=seg.switch_frame,
                                                  switch_garment=garments[1]))
        rows += score_switches(reconstruct(vae_params, truth.video), reference, garments, segments, chunk_frames)
    return mean_rows(rows)


def switch_case(spec, switch_frames):
    """(spec of the video with its first garment, [garment per segment], per-segment (spec, start, end))."""
    from fc_jax.tinyworld.spec import with_switch

    garments, segments, current = [spec.target], [], spec
    for k, s in enumerate(switch_frames):
        nxt = with_switch(dataclasses.replace(current, switch_frame=None, switch_garment=None), s,
                          seed=spec.seed * 10 + k).switch_garment
        garments.append(nxt)
        current = dataclasses.replace(current, target=nxt)
    bounds = [0, *switch_frames, spec.num_frames]
    for k, s in enumerate(switch_frames):
        start, end = bounds[k], bounds[k + 2]
        seg = dataclasses.replace(spec, target=garments[k], num_frames=end - start, switch_frame=s - start,
                                  switch_garment=garments[k + 1])
        segments.append((seg, start, end))
    return garments, segments


def switch_cases(specs, switch_frames) -> list[tuple]:
    """Per spec (spec, reference image, garment image, [garment per segment], per-segment (spec, start, end))."""
    from fc_jax.tinyworld.render import render_sample

    specs = list(specs)
    firsts = [render_sample(dataclasses.replace(spec, num_frames=1)) for spec in specs]  # reference, garment
    return [(spec, first.reference, first.garment, *switch_case(spec, switch_frames))
            for spec, first in zip(specs, firsts)]


def score_switches(video, reference, garments, segments, chunk_frames: int) -> list[dict]:
    """Per segment of `video` [F, H, W, 3] (`switch_case`'s), its `SWITCH_KEYS` switch metrics and
    `garment_after_hgc`, the new garment's hgc over the frames from the switch on."""
    from fc_jax.tinyworld import metrics
    from fc_jax.tinyworld.render import render_garment_image

    out = []
    for k, (seg, start, end) in enumerate(segments):
        old, new = (render_garment_image(g, seg.height, seg.width)[0] for g in garments[k:k + 2])
        part = video[start:end]
        m = metrics.switch_metrics(part, reference, seg, old_garment=old, new_garment=new, chunk_frames=chunk_frames)
        row = {key: m[key] for key in SWITCH_KEYS}
        row["garment_after_hgc"] = metrics.garment_metrics(part[seg.switch_frame:], new, seg)["hgc"]
        out.append(row)
    return out


def switching(tw: TinyWorld, samples: int, seed: int) -> dict:
    """The switch table: every variant on one switch and on three successive switches."""
    from fc_jax.sampling.streaming import StreamingSession, SwitchOptions
    from fc_jax.tinyworld.render import render_garment_image

    cfg = tw.configs["student"]
    chunk_frames = 4 * cfg.student.chunk_frames
    out = {}
    for case, (frames, switch_frames) in (("one_switch", ONE_SWITCH), ("three_switches", THREE_SWITCHES)):
        cases = switch_cases(tw.specs(samples, frames), switch_frames)
        out[case] = {"frames": frames, "switch_frames": list(switch_frames), "samples": samples}
        for name, fields in SWITCH_VARIANTS.items():
            session = StreamingSession(cfg, tw.params["student"], tw.params["vae"], tw.context(""), seed=seed,
                                       switch=SwitchOptions(**fields))
            rows = []
            for spec, reference, garment, garments, segments in cases:
                session.start(reference, garment, tw.context(full_caption(spec)))
                images = {s: render_garment_image(g, spec.height, spec.width)[0]
                          for s, g in zip(switch_frames, garments[1:])}
                video = np.concatenate(list(session.stream(frames, images, progress=False)))
                rows += score_switches(video, reference, garments, segments, chunk_frames)
            out[case][name] = mean_rows(rows)
        if len(switch_frames) == 1:
            out[case]["vae_ceiling"] = switch_ceiling(tw.params["vae"], cases, chunk_frames)
    return out


def goals(t1: dict, sw: dict) -> dict:
    """The issue's goal figures from the measured tables (None where a row is missing)."""
    from fc_jax.tinyworld.metrics import garment_consistency as garment

    rows = t1["rows"]
    full = sw["one_switch"]["full"]
    teacher, student, light = rows.get("teacher"), rows["student"], rows.get("student_light_decoder")
    return {
        "student_over_teacher_garment": round(garment(student) / max(garment(teacher), 1e-9), 4) if teacher else None,
        "student_over_teacher_fps": round(student["fps"] / teacher["fps"], 2) if teacher else None,
        "student_over_teacher_sampler_fps": (round(student["sampler_fps"] / teacher["sampler_fps"], 2)
                                             if teacher else None),
        "student_light_decoder_over_teacher_fps": (round(light["fps"] / teacher["fps"], 2)
                                                   if teacher and light else None),
        "switch_new_garment_within_chunk": full["new_share_chunk"],
        "switch_leakage": full["leakage"],
        "switch_continuity_ratio": full["continuity_ratio"],
    }


def tables(folder: str, samples: int, seed: int, teacher_steps: int) -> dict:
    """Everything above, in one dict (the JSON of `--what=tables`)."""
    tw = TinyWorld.load(folder)
    if "student" not in tw.params:
        raise FileNotFoundError(f"{folder}: no student.safetensors; the tables need the tiny-world student")
    t1 = table1(tw, samples, seed, teacher_steps)
    sw = switching(tw, samples, seed)
    missing = [r for r in ("base", "teacher") if r not in tw.params] + [
        "table2 and table3: their variants are trained by `python -m fc_jax.tinyworld ablations` and scored by "
        "`--what=table2,table3 --ablations=DIR`"]
    return {"table1": t1, "switching": sw, "goals": goals(t1, sw), "missing": missing}


def markdown(result: dict) -> str:
    """The tables as a Markdown report."""
    t1, sw = result["table1"], result["switching"]
    cols = ["id/id", "motion/motion_alignment", "motion/amp_score", "motion/smoo_score", "vq/vq", "garment/hgc",
            "garment/lgc", "ntp/ntp", "fps", "sampler_fps"]
    lines = ["# The paper's tables on the tiny world", "",
             f"Held-out split, {t1['samples']} samples of {t1['frames']} frames, this CPU "
             f"(`python -m fc_jax.bench tinyworld --what=tables`).", "",
             "## Table 1: base I2V / teacher / student", "", "| row | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, row in t1["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in cols) + " |")
    keys = [*SWITCH_KEYS, "garment_after_hgc"]
    for case in ("one_switch", "three_switches"):
        c = sw[case]
        lines += ["", f"## Switching: {case.replace('_', ' ')} (frames {c['frames']}, at {c['switch_frames']})", "",
                  "| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name in (*SWITCH_VARIANTS, "vae_ceiling"):
            if name in c:
                lines.append(f"| {name} | " + " | ".join(f"{c[name][k]:.3f}" for k in keys) + " |")
    lines += ["", "## Goals", "", "```json", __import__("json").dumps(result["goals"], indent=1), "```", "",
              "Not measured: " + "; ".join(result["missing"]), ""]
    return "\n".join(lines)
