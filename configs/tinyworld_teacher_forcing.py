"""Stage 2 on the tiny world (issue "the method on the tiny world"): in-context teacher forcing
(fc_jax.training.stages.teacher_forcing) from the tiny-world stage-1 teacher, the authors' recipe scaled down:
the block-causal student on [conditions, clean video, noisy video] with chunks of 3 latent frames (the 45-frame
videos' 12 latent frames = 4 chunks), always the full caption, no text dropout.

    python -m fc_jax.train --config=tinyworld_teacher_forcing --workdir=runs/tinyworld/teacher_forcing \
        --config.data.data_dir=runs/tinyworld/latents --config.train.init_from=runs/tinyworld/sft_params

`:smoke` is the suite's few-step variant (the smoke base's sizes).
"""

import ml_collections

from fc_jax.configs import tinyworld_sft


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of tinyworld_teacher_forcing; expected '' or 'smoke'")
    c = tinyworld_sft.get_config(variant)
    c.name = "tinyworld_teacher_forcing" + ("_smoke" if variant else "")
    c.stage = "teacher_forcing"
    # The doubled sequence is 40 + 2 x 240 = 520 tokens here: the block-causal layout as a dense mask (the xla
    # backend) is cheaper on a CPU than the 5B's tile-skipping `chunked` backend over 20-token tiles.
    c.model.attention.update(dict(backend="xla"))
    # The authors' betas (0, 0.999) and clip 10; the learning rate scaled to the tiny model.
    c.optim.update(dict(lr=2e-4, b1=0.0, b2=0.999, warmup_steps=20, schedule="cosine", decay_steps=800,
                        decay_factor=0.1, clip_norm=10.0))
    c.train.update(dict(steps=800, text_drop_prob=0.0, dynamic_caption_prob=0.0, eval_every=200))
    if variant == "smoke":
        c.optim.update(dict(warmup_steps=0, schedule="constant"))
        c.train.update(dict(steps=4, eval_every=2))
    return c
