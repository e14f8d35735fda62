"""The tiny world's VAE (issue "the tiny world"): the Wan2.2 VAE architecture at a small width, same latent format
(48 channels, 16x spatial, 4x temporal, streaming decode), trained on tiny-world clips by the `vae` stage
(fc_jax.training.stages.vae) on this 2-core CPU.

    python -m fc_jax.train --config=tinyworld_vae --workdir=runs/tinyworld_vae
    python -m fc_jax.train --config=tinyworld_vae:smoke --workdir=/tmp/vae_smoke   # a few steps (the suite's)

The tiny-world data set (160x128, 45-frame clips at 24 fps) is rendered once under WORKDIR/tinyworld_data.
"""

import ml_collections

from fc_jax.configs import sft_teacher


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of tinyworld_vae; expected '' or 'smoke'")
    c = sft_teacher.get_config("tiny")
    c.name = "tinyworld_vae" + ("_smoke" if variant else "")
    c.stage = "vae"
    c.video.update(dict(height=160, width=128, num_frames=45, fps=24))
    c.vae.update(dict(encoder_dim=32, decoder_dim=32, param_dtype="float32", dtype="float32"))
    # Clips of 9 frames (3 latent frames: the first-frame rule and two 4-frame chunks), L1 + a little MSE, and a
    # KL weight small enough to keep the latents informative (Wan's VAE uses 3e-6 with its GAN and LPIPS terms).
    c.vae_train = ml_collections.ConfigDict(dict(clip_frames=9, kl_weight=1e-6, mse_weight=1.0))
    c.optim.update(dict(lr=1e-3, warmup_steps=100, schedule="cosine", decay_steps=6000, decay_factor=0.05,
                        clip_norm=1.0, grad_accum_steps=1, weight_decay=0.0))
    c.train.update(dict(steps=6000, global_batch=4, seed=0, ema_decay=0.999, ema_start=0, log_every=25,
                        eval_every=250, eval_batches=2))
    c.checkpoint.update(dict(every=250, keep_last=2, keep_every=1000))
    c.data.update(dict(synthetic=False, eval_split="eval", num_threads=1, prefetch=2))
    c.data.tinyworld = True
    c.data.tinyworld_examples = 512
    if variant == "smoke":  # the smallest geometry the tiny world renders, a 4-wide VAE: through the driver fast
        c.video.update(dict(height=64, width=64, num_frames=9))
        c.vae.update(dict(encoder_dim=4, decoder_dim=4))
        c.vae_train.clip_frames = 5
        c.train.update(dict(steps=4, log_every=2, eval_every=2, eval_batches=1))
        c.optim.update(dict(warmup_steps=0, schedule="constant"))
        c.checkpoint.update(dict(every=2, keep_every=0))
        c.data.tinyworld_examples = 32  # eval: 4 records, one evaluation batch
    return c
