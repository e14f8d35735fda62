"""The tiny world's light streaming decoder (issue "a light streaming decoder"): `fc_jax.models.light_decoder`
distilled from the tiny-world VAE's decoder by the `light_decoder` stage (fc_jax.training.stages.light_decoder),
on this 2-core CPU.

    python -m fc_jax.tinyworld recipe --workdir=runs/tinyworld --steps=data,vae,light_decoder
    python -m fc_jax.train --config=tinyworld_light_decoder --workdir=runs/tinyworld/light_decoder \
        --config.data.data_dir=runs/tinyworld/data --config.light_decoder_train.teacher=runs/tinyworld/vae_params

`:smoke` is the suite's few-step variant (the smoke VAE's geometry).
"""

import ml_collections

from fc_jax.configs import tinyworld_vae


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of tinyworld_light_decoder; expected '' or 'smoke'")
    c = tinyworld_vae.get_config(variant)
    c.name = "tinyworld_light_decoder" + ("_smoke" if variant else "")
    c.stage = "light_decoder"
    # 48 channels through 2 memory blocks at the latent resolution, then 32 / 16 / 8 at x2 / x4 / x8 and a
    # depth-to-space: 0.18 M parameters, 24 M multiply-adds per 160x128 frame. Run tw3's decoder (64 wide, 3
    # blocks, 48 / 32 / 24: 82 M) met 34.2 dB against the full decoder but took 2.07 ms a frame on this CPU, 58%
    # of a streamed chunk with the DiT (goal: at most 30%); the decoder is bound by its FLOPs here, down to widths
    # of 8 (run tw3c's 24 / 12 / 6, 16 M, met 35.5 dB but took 0.84 ms against this one's 0.64).
    c.light_decoder = ml_collections.ConfigDict(dict(width=48, blocks=2, up_widths=(32, 16, 8), dtype="float32"))
    # Whole 45-frame clips (the VAE trains on 21-frame ones) in the VAE's 64 x 64 windows; the teacher's frames are the
    # main target, the real frames a small pull towards the truth where the teacher is wrong. latent_noise: the training
    # latents get sigma ~ U(0, 0.5) of noise (the teacher decodes the noisy ones): tw5's decoder, trained on the
    # encoder's latents only, met 33.6 dB against the VAE there but lost the garment on the student's latents (the new
    # garment's share after a switch 0.05 against the VAE's 0.26, 4 streams). On run tw6's student (16 streams) this one
    # and tw5's land equally far from the VAE decoder's metrics (largest gaps: identity 17% and 15%, smoothness 10% and
    # 9%) at 33.8 and 33.6 dB against it on clean latents: the noise neither helps nor hurts. sampler_share: the part of
    # every batch's clips that take the student's own latents in place of encoded ones (`sampler_streams` 45-frame
    # streams of it on training conditions, written by the recipe's sampler_latents step; the last
    # `sampler_eval_streams` of them held out for eval/psnr_vs_full_sampler_db).
    c.light_decoder_train = ml_collections.ConfigDict(dict(
        teacher="", clip_frames=int(c.video.num_frames), crop=tuple(c.vae_train.crop), real_weight=0.1,
        mse_weight=1.0, latent_noise=0.5, sampler_latents="", sampler_share=0.5, sampler_streams=256,
        sampler_eval_streams=8, rare_colour_weight=10.0, rare_colour_share=0.05))
    # 3000 steps (run tw8, 28 min; tw6 trained 1000, 9 min): 35.0 dB against the VAE decoder (33.8), 21.0 against
    # the real frames (20.9), and on the student's 16 streams the largest metric gap 0.041 on the new garment's
    # share after a switch (tw6's: 0.067 on identity; identity now 0.37 against the VAE decoder's 0.40).
    # Half of each batch from the student's own latents (run tw11, 3000 steps, 45 min beside another job; tw8
    # trained on encoded clips only): on 8 held-out student streams 33.5 dB against the VAE decoder (tw8's decoder
    # 32.3), on encoded latents 35.3 (35.0); over 16 streamed switches the largest metric gap 0.031 on identity
    # (tw8: 0.041 on the new garment's share, now 0.277 against the VAE decoder's 0.269) and the largest relative
    # one 0.21 on the garment's hgc, 0.103 against 0.130 (tw8: 1.0 on an lgc of 0 against 0.0002; the goal 0.02).
    # rare_colour_weight: pixels of colours under 5% of the teacher's clip weigh 11x (run tw12, 3000 steps, 31
    # min; tw11 the same without): 35.7 dB against the VAE decoder (35.3), 29.7 dB on the figure's pixels (28.6)
    # and 75.6% of them in the VAE decoder's palette class (73.0%, 6 held-out switch streams), garment hgc 0.107
    # against the VAE decoder's 0.130 (0.103); largest gaps over 16 streams 0.18 relative (hgc) and 0.036
    # absolute (amplitude; tw11 0.031 on identity). Calibration: i.i.d. pixel noise on the VAE decoder's own
    # frames moves these metrics by up to 16% (0.041 absolute) at 35 dB, 9.7% at 40 dB and 1.4% at 45 dB, so the
    # 2% goal asks for about 45 dB of fidelity to the VAE decoder; both decoders sit at their PSNR's noise level.
    # Retrained with run tw13's VAE (the shipped one, 21-frame clips; 33 min): 32.8 dB against its decoder, whose
    # frames are sharper than tw6's (22.5 dB against the real ones, tw6's 21.0), 22.4 dB against the real frames;
    # over 16 streams the largest gaps 0.032 absolute (identity) and 1.1 relative (the garment's lgc, 0.010 against
    # 0.005).
    c.optim.update(dict(lr=2e-3, warmup_steps=50, schedule="cosine", decay_steps=3000, decay_factor=0.05))
    c.train.update(dict(steps=3000, global_batch=4))
    if variant == "smoke":
        c.light_decoder.update(dict(width=8, blocks=1, up_widths=(8, 8, 8)))
        c.light_decoder_train.update(dict(sampler_streams=3, sampler_eval_streams=1))
        c.optim.update(dict(warmup_steps=0, schedule="constant"))
        c.train.update(dict(steps=4, global_batch=4))
    return c
