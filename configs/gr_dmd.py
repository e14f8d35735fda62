"""Stage 3: gradient-reweighted DMD with a self-forcing rollout (REFERENCE §5) on Wan2.2-TI2V-5B, with the
authors' hyper-parameters (configs/gr_dmd_wan22_ic.yaml upstream): mixed captions (mixed_captions: true there,
though their README says long captions; the code wins), no text dropout, the real score's unconditional text the
negative prompt (`sampling.negative_prompt`), a straight-through gradient across chunks, and the generator and
critic steps each on their own batch and rollout exit step.

5B run (generator from stage 2, critic and frozen real score from the stage-1 teacher, aesthetic reward):
    python -m fc_jax.train --config=gr_dmd --workdir=gs://bucket/gr_dmd \
        --config.data.data_dir=gs://bucket/latents --config.distill.generator_from=gs://bucket/tf/params \
        --config.distill.teacher_from=gs://bucket/sft_teacher/params --config.distill.vae_from=ckpt/vae \
        --config.distill.reward_from=ckpt/aesthetic
Test-sized variant: `get_config("tiny")` (tiny model, 2 chunks of 3 latents, synthetic data).

Mesh, sharding rules, checkpoints and data are stage 1's (configs/sft_teacher.py). Global batch 64 per step (the
authors' README; their scripts/train/sf_wan22_ic.sh runs 8 GPUs x 1 = 8, see configs/sft_teacher.py); each
iteration reads two such batches, one for the generator step and one for the critic step. Recommended mesh: the
default, FSDP over every chip with one sample per chip, i.e. `fsdp=64` for the global batch of 64. Compiled
per-device peak (`python -m fc_jax.bench distill --memory`, fake CPU devices, 1280x704, 7 chunks, reward in the
loop): generator step 30.8 GiB (text-path and straight-through gradients; the former per-chunk gradient pass with
the cache and text detached took 29.8), critic step 21.4 GiB on fsdp 64; on fsdp 8 (global batch 8) 49.6 /
38.1 GiB, measured with that former pass.
"""

import ml_collections

from fc_jax.configs import sft_teacher


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "5b", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of configs/gr_dmd.py; expected '' (5B) or 'tiny'")
    c = sft_teacher.get_config(variant)
    c.name = "gr_dmd" + ("_tiny" if variant == "tiny" else "")
    c.stage = "gr_dmd"
    # Generator (AdamW, betas (0, 0.999), clip 10) in `optim`; the critic's own settings in `critic_optim`.
    c.optim.update(dict(lr=2e-6, b1=0.0, b2=0.999, warmup_steps=0, schedule="constant", clip_norm=10.0,
                        grad_accum_steps=1))
    c.critic_optim = ml_collections.ConfigDict(dict(c.optim.to_dict()))
    c.critic_optim.lr = 4e-7
    c.train.update(dict(steps=3000, text_drop_prob=0.0))
    c.distill = ml_collections.ConfigDict(
        dict(
            num_chunks=7,  # 7 blocks x 3 latents = 21 latent frames (81 px frames)
            generator_every=5,  # generator step every 5th iteration, critic every iteration
            guidance_scale=3.0,  # real score CFG (text-only drop)
            temperature=0.2,  # GR-DMD softmax(r / -τ)
            # "aesthetic" (CLIP ViT-L/14 + LAION head on decoded frames) | "palette_purity" (the tiny world's VQ
            # score, fc_jax.models.reward.palette_purity_scores) | "none" (plain DMD)
            reward="aesthetic",
            # Gradient of a chunk's attention over earlier chunks' cached K/V: "straight_through" to their
            # exit-step K/V (the authors' in-place cache writes), or "none" (the cache carries no gradient).
            cross_chunk_gradient="straight_through",
            # False: the generator and the critic step each draw their own batch and rollout exit step (the
            # authors' trainer); True: one of each, shared by the two steps of an iteration.
            shared_draws=False,
            # The rollout's commit pass on the chunk noised to the training table's smallest σ, "table" (the
            # authors' training rollout: add_noise at t = 0 looked up in their table), or on the clean chunk,
            # "none" (as their streaming inference and fc_jax's session commit).
            commit_noise="table",
            ema_decay=0.99,
            ema_start=200,
            generator_from="",  # stage-2 parameters
            teacher_from="",  # stage-1 parameters (critic init and frozen real score)
            vae_from="",
            reward_from="",
        )
    )
    # Training rollout: full attention over conditions + 7 chunks (authors: local_attn_size -1).
    c.student.update(dict(window_frames=23, sink_frames=5))
    if variant == "tiny":
        c.model.attention.backend = "xla"
        c.video.update(dict(height=64, width=32, num_frames=21))  # 6 latent frames = 2 chunks, latents 4 x 2
        c.student.update(dict(window_frames=8, sink_frames=2))  # conditions + 1 history chunk + the chunk
        c.distill.update(dict(num_chunks=2, reward="none"))
        c.optim.update(dict(lr=1e-4))
        c.critic_optim.update(dict(lr=1e-4))
        c.train.update(dict(steps=20, global_batch=4))
    return c
