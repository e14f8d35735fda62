"""The light streaming decoder for Wan2.2-TI2V-5B's latents (issue "a light streaming decoder"): the
`light_decoder` stage distils the real Wan2.2 VAE's decoder on accelerators, from pixel clips of a FashionTriplets
data set encoded on the fly by the same VAE (the teacher: a folder from `python -m fc_jax.convert vae`).

    python -m fc_jax.train --config=wan22_light_decoder --workdir=gs://bucket/light_decoder \
        --config.data.data_dir=gs://bucket/triplets --config.light_decoder_train.teacher=ckpt/wan22_vae

Then `python -m fc_jax.export --workdir=... --dst=CHECKPOINT/light_decoder` and `python -m fc_jax.generate
--checkpoint=CHECKPOINT --decoder=light`. `python -m fc_jax.bench decoder` reads this config's light decoder for
its 1280x704 figures.
"""

import ml_collections

from fc_jax.configs import sft_teacher


def get_config() -> ml_collections.ConfigDict:
    c = sft_teacher.get_config()
    c.name = "wan22_light_decoder"
    c.stage = "light_decoder"
    # 128 channels through 4 memory blocks at the latent resolution, 96 / 64 / 32 at x2 / x4 / x8, bf16 compute.
    c.light_decoder = ml_collections.ConfigDict(dict(width=128, blocks=4, up_widths=(96, 64, 32), dtype="bfloat16"))
    # 17-frame clips (5 latent frames: the first-frame rule and 4 later ones) in 256 x 256 windows of the
    # 1280 x 704 videos; the teacher's frames are the target, the real ones a small pull towards the truth.
    # sampler_latents: a .npy of the student's own clean latents [N, f, h, w, 48] (f >= 5, 44 x 80 at 720p) of
    # which `sampler_share` of every batch's clips are drawn (the stage's docstring); none by default.
    c.light_decoder_train = ml_collections.ConfigDict(dict(teacher="", clip_frames=17, crop=(256, 256),
                                                           real_weight=0.1, mse_weight=1.0, sampler_latents="",
                                                           sampler_share=0.0, sampler_eval_streams=0,
                                                           rare_colour_weight=0.0, rare_colour_share=0.05))
    c.optim.update(dict(lr=1e-3, warmup_steps=500, schedule="cosine", decay_steps=20000, decay_factor=0.05,
                        clip_norm=1.0, grad_accum_steps=1, weight_decay=0.0))
    c.train.update(dict(steps=20000, global_batch=64, ema_decay=0.999, ema_start=0, eval_every=1000,
                        eval_batches=2, init_from=""))
    c.data.update(dict(synthetic=False, data_dir=""))
    return c
