"""The student's metric per checkpoint: the tiny-world metrics of its streams on eval-split conditions, as an
evaluation hook the recipe hands the `gr_dmd` stage's driver (the stage itself knows no world).

    hook = gr_dmd_hook(config, vae_params, texts, count)   # hook(step, state) -> {"eval/garment": ..., ...}

Each evaluation streams `count` eval-split specs (`video.num_frames` frames, their reference, garment and full
caption, noise seed 0) through a `StreamingSession` of the generator's EMA and averages `metrics.evaluate` over
them. `eval/garment` is the tables' garment consistency, (high level + low level) / 2.
"""

from __future__ import annotations

import numpy as np

LOGGED = {"garment/hgc": "eval/garment_hgc", "garment/lgc": "eval/garment_lgc", "id/id": "eval/id",
          "motion/motion_alignment": "eval/motion_alignment", "vq/vq": "eval/vq"}


def stream_scores(session, texts, specs) -> dict:
    """Mean `metrics.evaluate` of `session`'s stream of each spec (its reference, garment and full caption):
    {"group/name": float}, plus "garment" (`metrics.garment_consistency`)."""
    from fc_jax.tinyworld.metrics import evaluate, garment_consistency
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import full_caption

    rows = []
    for spec in specs:
        truth = render_sample(spec)
        session.start(truth.reference, truth.garment, texts([full_caption(spec)])[0])
        video = np.concatenate(list(session.stream(spec.num_frames, progress=False)))
        rows.append(evaluate(video, spec, ground_truth=truth))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    mean["garment"] = garment_consistency(mean)
    return mean


def gr_dmd_hook(config, vae_params, texts, count: int):
    """`hook(step, state) -> {eval/...: float}` scoring the EMA generator of a `distill.DistillState` on the first
    `count` eval-split specs of `config.video`'s geometry; `texts` an `EmbeddingCache` of the tiny umT5."""
    from fc_jax.sampling.streaming import StreamingSession
    from fc_jax.tinyworld.spec import split_specs

    if count < 1:
        raise ValueError(f"student evaluation: count must be >= 1, got {count}")
    v = config.video
    specs = list(split_specs("eval", count, height=v.height, width=v.width, num_frames=v.num_frames))
    negative = texts([config.sampling.negative_prompt])[0]

    def hook(step, state) -> dict:
        session = StreamingSession(config, state.ema, vae_params, negative)
        scores = stream_scores(session, texts, specs)
        return {"eval/garment": scores["garment"], **{name: scores[k] for k, name in LOGGED.items()}}

    return hook
