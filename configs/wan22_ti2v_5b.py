"""The real Wan2.2-TI2V-5B backbone, VAE and umT5-XXL text encoder at FashionChameleon's 1280x704 resolution.

Teacher sample: python -m fc_jax.sample --config=wan22_ti2v_5b --checkpoint=DIR ...
Memory:         python -m fc_jax.bench memory --config=wan22_ti2v_5b
"""

import ml_collections

# Wan's default negative prompt, the authors' `negative_prompt` (configs/*_wan22_ic.yaml): the unconditional text
# of the teacher's CFG and of stage 3's real score.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，"
    "背景人很多，倒着走"
)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "wan22_ti2v_5b"

    # The diffusion transformer (REFERENCE §1).
    c.model = ml_collections.ConfigDict(
        dict(
            patch_size=(1, 2, 2),
            in_channels=48,
            out_channels=48,
            dim=3072,
            ffn_dim=14336,
            num_heads=24,
            num_layers=30,
            text_dim=4096,
            text_len=512,
            freq_dim=256,
            eps=1e-6,
            rope_theta=10000.0,
            rope_max_positions=1024,
            param_dtype="bfloat16",
            dtype="bfloat16",
            # nn.remat policy name: "none", "full", "dots", "dots_no_batch" (see fc_jax.models.dit.REMAT_POLICIES).
            remat_policy="none",
            attention=ml_collections.ConfigDict(dict(backend="auto", q_block=1024, kv_block=1024)),
            # How the reference and garment latents enter: "in_context" (extra frames of tokens, FashionChameleon)
            # or "channel_concat" (on the video tokens' channels, the paper's baseline; patch embedding 3x wide).
            condition="in_context",
        )
    )

    # The Wan2.2 VAE (REFERENCE §2).
    c.vae = ml_collections.ConfigDict(
        dict(
            z_dim=48,
            encoder_dim=160,
            decoder_dim=256,
            dim_mult=(1, 2, 4, 4),
            encoder_res_blocks=2,
            decoder_res_blocks=3,
            temporal_downsample=(False, True, True),
            patch_size=2,
            param_dtype="float32",
            dtype="bfloat16",
        )
    )

    # The umT5-XXL text encoder (REFERENCE §3).
    c.umt5 = ml_collections.ConfigDict(
        dict(
            vocab_size=256384,
            d_model=4096,
            num_heads=64,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            eps=1e-6,
            text_len=512,
            param_dtype="bfloat16",
            dtype="bfloat16",
            # nn.remat policy name, as for the DiT (see fc_jax.models.umt5.REMAT_POLICIES).
            remat_policy="none",
        )
    )

    # Flow matching and sampling (REFERENCE §4-5).
    c.sampling = ml_collections.ConfigDict(
        dict(
            shift=5.0,
            teacher_steps=50,
            guidance_scale=3.0,
            student_timesteps=(1000, 750, 500, 250),
            negative_prompt=NEGATIVE_PROMPT,
            # An .npy [n, text_dim] embedding used instead of encoding `negative_prompt` ("" = none).
            negative_embedding="",
            # The teacher's UniPC σ grid: "diffusers" (linspace(1, 1/1000), first nudged below 1; the default)
            # or "wan" (Wan's FlowUniPCMultistepScheduler: linspace(0.999, 0)), both shifted (`unipc.flow_sigmas`).
            teacher_sigmas="diffusers",
        )
    )

    # The causal streaming student (REFERENCE §5): chunks of 3 latent frames; a chunk attends to at most
    # window_frames frames (2 conditions + history + itself), the conditions and the first chunk kept as a sink.
    c.student = ml_collections.ConfigDict(dict(chunk_frames=3, window_frames=23, sink_frames=5))

    # Video geometry (REFERENCE §5): 1280 (H) x 704 (W) portrait, 81 frames = 21 latent frames.
    c.video = ml_collections.ConfigDict(dict(height=1280, width=704, num_frames=81, fps=24))
    return c
