"""Stage 1 on the tiny world (issue "the method on the tiny world"): the in-context SFT teacher (fc_jax.training.stages
.sft) fine-tuned from the tiny base model on tiny-world latent triplets, the authors' recipe scaled down: the
mismatched reference (the person in another garment) and the flat garment prepended as clean in-context tokens,
10% text dropout for guidance, mixed captions (the dynamic caption alone 70% of the time).

    python -m fc_jax.train --config=tinyworld_sft --workdir=runs/tinyworld/sft \
        --config.data.data_dir=runs/tinyworld/latents --config.train.init_from=runs/tinyworld/base_params

Geometry, text encoder and model are the base's (`tinyworld_base`): 240 video tokens + 2 x 80 condition tokens.
`:smoke` is the suite's few-step variant (the smoke base's sizes).
"""

import ml_collections

from fc_jax.configs import tinyworld_base


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of tinyworld_sft; expected '' or 'smoke'")
    c = tinyworld_base.get_config(variant)
    c.name = "tinyworld_sft" + ("_smoke" if variant else "")
    c.stage = "sft"
    # From the base: a lower peak learning rate than its pretraining (1e-3), cosine to 5% over the run.
    c.optim.update(dict(lr=5e-4, warmup_steps=50, schedule="cosine", decay_steps=1500, decay_factor=0.05))
    c.train.update(dict(steps=1500, text_drop_prob=0.1, dynamic_caption_prob=0.7,
                        ema_decay=0.995, eval_every=250))
    if variant == "smoke":
        c.optim.update(dict(warmup_steps=0, schedule="constant"))
        c.train.update(dict(steps=4))
    return c
