"""Stage 2: in-context teacher forcing (REFERENCE §5) on Wan2.2-TI2V-5B, with the authors' hyper-parameters
(configs/tf_wan22_ic.yaml upstream): always the full caption (mixed_captions: false), no text dropout
(trainer/tf_ic.py encodes the batch's prompts as they are).

5B run (student initialised from the stage-1 teacher's parameters):
    python -m fc_jax.train --config=teacher_forcing --workdir=gs://bucket/teacher_forcing \
        --config.data.data_dir=gs://bucket/latents --config.train.init_from=gs://bucket/sft_teacher/params
Smoke run on CPU (tiny model, synthetic triplets):
    python -m fc_jax.train --config=teacher_forcing:tiny --workdir=/tmp/tf_tiny

Everything not set here (mesh, sharding rules, checkpoints, data, the global batch and why) is stage 1's
(configs/sft_teacher.py).
"""

import ml_collections

from fc_jax.configs import sft_teacher


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "5b", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of configs/teacher_forcing.py; expected '' (5B) or 'tiny'")
    c = sft_teacher.get_config(variant)
    c.name = "teacher_forcing" + ("_tiny" if variant == "tiny" else "")
    c.stage = "teacher_forcing"
    # The doubled sequence (2 x 20,240 tokens at 720p) needs the tile-skipping attention: never a dense mask.
    c.model.attention.backend = "chunked"
    c.optim.update(dict(lr=1e-6, b1=0.0, b2=0.999, warmup_steps=0, schedule="constant", clip_norm=10.0))
    c.train.update(dict(steps=7000, text_drop_prob=0.0, dynamic_caption_prob=0.0))
    if variant == "tiny":
        # 21 frames = 6 latent frames = 2 blocks of 3; latents 4 x 2 = 2 tokens per frame; tiles of 4 tokens so
        # the layout really skips tiles.
        c.video.update(dict(height=64, width=32, num_frames=21))
        c.model.attention.update(dict(q_block=4, kv_block=4))
        c.optim.update(dict(lr=1e-3, warmup_steps=0, clip_norm=10.0))
        c.train.update(dict(steps=100))
    return c
