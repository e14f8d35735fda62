"""The tiny world's VAE (issue "the tiny world"): the Wan2.2 VAE architecture at a small width, same latent format
(48 channels, 16x spatial, 4x temporal, streaming decode), trained on tiny-world clips by the `vae` stage
(fc_jax.training.stages.vae) on this 2-core CPU.

    python -m fc_jax.tinyworld recipe --workdir=runs/tinyworld            # renders the data, trains this stage
    python -m fc_jax.train --config=tinyworld_vae --workdir=runs/tinyworld/vae \
        --config.data.data_dir=runs/tinyworld/data                        # this stage alone, on rendered data

The recipe renders `data.tinyworld_examples` train records (and an eighth as many eval and held-out ones) of the
config's geometry (160x128, 45-frame clips at 24 fps) once; `:smoke` is the suite's few-step variant.
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
    # Width 16 with one residual block per stage (Wan's: 160 / 256 wide, 2 / 3 blocks): 2.4 M parameters, a
    # 0.58 s gradient step on 2 clips of 21 x 64 x 64 on the 2-core CPU (1.2 s on 45-frame ones).
    c.vae.update(dict(encoder_dim=16, decoder_dim=16, encoder_res_blocks=1, decoder_res_blocks=1,
                      param_dtype="float32", dtype="float32"))
    # 21-frame clips (6 latent frames; evaluation runs whole 45-frame videos) in random 64 x 64 windows (the VAE is
    # convolutional; evaluation runs whole 160 x 128 frames), L1 + MSE, and a KL weight small enough to keep the latents
    # informative (Wan's VAE uses 3e-6 beside its GAN and LPIPS terms); the posterior starts at log σ² = -10 (from the
    # random init's 0, run tw3 ended at σ ≈ 0.25 of mu's spread; 400 steps: 18.1 dB against 17.5 dB at the random init's
    # log σ²). With 9-frame clips every chunk after the third drifted (19.3 -> 16 dB), so runs tw3..tw12 trained on
    # whole 45-frame clips; 21-frame ones score higher on whole 45-frame held-out videos at half the time per step (run
    # tw13 below). Weighting rare colours did not help the figure over the whole run (`rare_colour_weight`, off here:
    # run tw4 weighed pixels of colours under 5% of their clip 11x, 79% of the figure's pixels and 4% of the
    # background's; after the same 1400 steps the figure was 11.9 dB against tw3's 11.8 and the frame 19.4 dB against
    # 20.5, on 4 held-out videos), so the shipped VAE trains without it.
    c.vae_train = ml_collections.ConfigDict(dict(clip_frames=21, crop=(64, 64), kl_weight=1e-6, mse_weight=1.0,
                                                 logvar_init=-10.0, rare_colour_weight=0.0, rare_colour_share=0.05))
    # Learning rate 5e-4 for 2000 steps (run tw5; tw3 shipped 2e-3 for 1400): on the held-out bench 21.0 dB against
    # 19.5, the figure 12.6 against 11.1, the VAE's motion ceiling 0.83 against 0.54 (at 1400 steps 5e-4 was
    # already ahead of 2e-3 at every evaluation).
    # Tried and not adopted (run tw7, 2026-12-07): one clip per step for 4000 steps (the same compute, 0.56 s a
    # step) led early (19.8 dB on the eval split after 7.5 min against 18.4) and ended at 21.2 against 20.6, but on
    # the held-out bench only at 21.13 dB against 21.04 (figure 12.7 against 12.6); widening the low-resolution
    # stages (dim_mult (1, 2, 8, 8), 3.5x the parameters, 1.4 s a step) was behind after 400 steps (18.1 against
    # 18.4); recolouring each clip (channels permuted and inverted at random, so the background too shows every
    # hue) was far behind after 400 steps of one clip (14.0 against 18.9). Both VAEs decode a flat 48 x 80 pink
    # square (255, 105, 180) on the background as a pale (208, 184, 184) (shipped) / (222, 188, 184) (tw7), and
    # teal (0, 150, 150) as (45, 104, 161) / (32, 111, 165): saturated garment colours are not learned even on
    # flat regions, and the training split reconstructs no better (21.8 dB on 6 training videos, both VAEs).
    # From a fresh init this architecture learns even flat colours slowly: on batches of 8 flat random-colour
    # 32 x 32 frames, 300 Adam steps reach 20.9 dB at lr 5e-4, 23.6 at 1e-4 and 15.0 at 2e-3; on the tiny world
    # lr 2e-4 was behind 5e-4 after 400 steps (18.2 against 18.4), so the learning rate is not the lever either.
    # Nor is the architecture (2026-12-07, 400 steps of 4 whole first frames from 40 training videos, PSNR on 8
    # others): this VAE 21.2 dB; without its RMSNorms 22.3; with a mean-centred LayerNorm 21.2; a plain conv
    # autoencoder of the same compression (16x, 48 channels, widths 16..64, 0.33 M parameters) 21.9, at twice the
    # width 22.4, and after 2000 steps 22.6 (25.3 on its training frames). The same plain autoencoder at 8x reaches
    # 23.6 and at 4x (48 channels for 48 pixel values: no compression at all) only 25.9: on this budget every
    # convolutional autoencoder learns the tiny world's sharp flat-colour frames slowly. Wan's image-first
    # curriculum did not pay either: 7 min of whole frames (batch 8) then 7 min of these clips scored 19.4 dB on 4
    # held-out videos (20.4 on their first frames) against 20.1 (19.6) for 14 min of clips alone.
    # The latent format is not the limit (2026-12-07): a linear code of the same size, PCA of each latent block
    # (frame 0's 16 x 16 pixels, then 4 frames x 16 x 16) to 48 numbers fitted on 48 training videos, scores
    # 25.4 dB on the bench's 16 held-out videos (figure 17.6, background 30.2) where this VAE scores 21.0 (12.6,
    # 27.8): the trained VAE sits 4.4 dB below a closed-form linear code, so it is its training that falls short.
    # Pulling the encoder's mean towards that code (+ mean squared distance to the whitened PCA code, weight 1) made
    # it worse: 15.9 dB after 400 one-clip steps against 17.2 without.
    # Shipped since run tw13 (2026-12-07): 21-frame clips for 5000 steps (decay_steps 5000; 0.58 s a step, 51 min
    # with its evaluations against the 45-frame recipe's 39 min for 2000): on the bench's 16 held-out videos
    # 22.1 dB (figure 14.2, background 27.0) against 21.0 (12.6, 27.8), and far higher ceilings through it (8
    # held-out samples, the tables' vae_ceiling rows): garment colour 0.39 against 0.02, hgc 0.49 (0.13), lgc 0.26
    # (0.003), identity 0.69 (0.41), motion direction 1.0 (0.75), and on one switch the new garment's share 0.57
    # (0.35), leakage 0.036 (0.084), the jump 1.2x the typical step (8.6x). After 300 s of one-clip steps: 20.1 dB
    # against 17.2 for 45-frame clips.
    # Its decoder can draw far more than its encoder gives it (2026-12-08, 200 Adam steps on the latents themselves
    # against the pixels, decoder frozen): the first 9 frames of a held-out video go from 26.5 dB encoded (figure
    # 17.3) to 30.6 (22.5); flat 48 x 80 squares on grey from 24.1..25.9 dB to 30.7..33.5, the colours then exact to
    # a unit ((255, 105, 180) encodes to (252, 121, 172), optimised (255, 106, 179)). The optimised latents spread
    # wider (std 1.13 against 0.79): the encoder, not the decoder or the format, is where the 30 dB is lost. Training
    # the encoder alone on, decoder frozen (800 steps of these clips at lr 1e-4), did not recover it: 23.00 -> 23.09 dB
    # on 4 held-out videos. Nor did a wider encoder (2026-12-08): a fresh one twice as wide (encoder_dim 32, 4.2 M
    # parameters against 1.1 M) trained against the frozen decoder for 1500 steps of the same clips (lr 5e-4, cosine;
    # 0.7 s a step) reached 22.99 dB at 1000 steps and 23.15 at 1500 on the same 4 videos, against the shipped
    # encoder's 23.00: the encoder's width is not where the 30 dB is lost either.
    c.optim.update(dict(lr=5e-4, warmup_steps=50, schedule="cosine", decay_steps=5000, decay_factor=0.05,
                        clip_norm=1.0, grad_accum_steps=1, weight_decay=0.0))
    c.train.update(dict(steps=5000, global_batch=2, seed=0, ema_decay=0.995, ema_start=0, log_every=25,
                        eval_every=200, eval_batches=2))
    c.checkpoint.update(dict(every=100, keep_last=2, keep_every=600))
    c.data.update(dict(synthetic=False, eval_split="eval", num_threads=1, prefetch=2))
    c.data.tinyworld_examples = 512  # what the recipe renders
    c.data.calibration_videos = 32  # training videos whose latent statistics the recipe calibrates the VAE to
    if variant == "smoke":  # the smallest geometry the tiny world renders, a 4-wide VAE: through the driver fast
        c.video.update(dict(height=64, width=64, num_frames=9))
        c.vae.update(dict(encoder_dim=4, decoder_dim=4))
        c.vae_train.update(dict(clip_frames=9, crop=(32, 48), rare_colour_weight=10.0))  # its code path too
        c.train.update(dict(steps=4, log_every=2, eval_every=2, eval_batches=1))
        c.optim.update(dict(warmup_steps=0, schedule="constant"))
        c.checkpoint.update(dict(every=2, keep_every=0))
        c.data.tinyworld_examples = 32  # eval: 4 records, one evaluation batch
        c.data.calibration_videos = 2
    return c
