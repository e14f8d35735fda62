"""Stage 2, in-context teacher forcing (REFERENCE §5): the causal student learns to denoise each 3-frame block
given the clean past.

One sequence per sample: [clean reference, clean garment, clean video] ++ [reference, garment, noisy video],
both halves at the same RoPE frames (0, 1, 2, ...), every condition frame and every clean frame at t = 0. The
attention layout is `teacher_forcing_layout` (the clean half block-causal, noisy block k sees the clean
conditions, clean blocks < k and itself), run by the tile-skipping `chunked` backend: 2 x 20,240 tokens at
720p never become a dense mask. Each 3-frame block draws its own table index in [0, 1000) -> shifted t and its
Gaussian-shaped training weight; the loss of each noisy video frame is the mean over (H, W, C) of the squared
error to `ε − x0`, times its block's weight, averaged over frames and samples (the authors' `generator_loss`).
Batches, data and the training machinery are stage 1's (`SingleNetworkStage`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
from fc_jax.models import attention, dit
from fc_jax.training.stage import SingleNetworkStage, in_context_tokens


def teacher_forcing_inputs(reference, garment, video, noisy, block_t, chunk_frames: int):
    """The doubled sequence.

    reference, garment [B, 1, h, w, C]; video (clean), noisy [B, F, h, w, C]; block_t [B, F / chunk_frames].
    Returns (latents [B, 2(2+F), h, w, C], timesteps [B, 2(2+F)], frame_positions [2(2+F)]).
    """
    b, f = video.shape[:2]
    if f % chunk_frames:
        raise ValueError(f"teacher forcing needs whole {chunk_frames}-frame blocks; the video has {f} latent frames")
    clean, _, positions = dit.in_context_inputs(reference, garment, video, jnp.zeros((b,)))
    noisy_seq, noisy_t, _ = dit.in_context_inputs(reference, garment, noisy, jnp.repeat(block_t, chunk_frames, axis=1))
    latents = jnp.concatenate([clean, noisy_seq], axis=1)
    timesteps = jnp.concatenate([jnp.zeros_like(noisy_t), noisy_t], axis=1)
    return latents, timesteps, np.concatenate([positions, positions])


def teacher_forcing_loss(model: dit.WanDiT, shift: float, chunk_frames: int, params, batch, key) -> jax.Array:
    """The weighted flow loss of one micro-batch {video [B, F, h, w, C], reference, garment [B, 1, h, w, C],
    context [B, L, D]} with F a multiple of `chunk_frames`."""
    if model.cfg.condition != "in_context":
        raise ValueError(f"teacher forcing trains the in-context student; model.condition is {model.cfg.condition!r}")
    video = batch["video"].astype(jnp.float32)
    b, f, h, w, _ = video.shape
    blocks = f // chunk_frames
    key_t, key_noise = jax.random.split(key)
    block_t, block_w = sample_training_timesteps(key_t, (b, blocks), shift)
    t = jnp.repeat(block_t, chunk_frames, axis=1)
    noise = jax.random.normal(key_noise, video.shape, jnp.float32)
    noisy = add_noise(video, noise, t)
    latents, timesteps, positions = teacher_forcing_inputs(
        batch["reference"], batch["garment"], video, noisy, jnp.floor(block_t), chunk_frames
    )
    _, ph, pw = model.cfg.patch_size
    layout = attention.teacher_forcing_layout(blocks, chunk_frames, (h // ph) * (w // pw), dit.NUM_CONDITION_FRAMES)
    pred = model.apply({"params": params}, latents, timesteps, batch["context"], positions, layout)[:, -f:]
    per_frame = jnp.mean(jnp.square(pred.astype(jnp.float32) - flow_target(video, noise)), axis=(2, 3, 4))
    return jnp.mean(per_frame * jnp.repeat(block_w, chunk_frames, axis=1))


class TeacherForcing(SingleNetworkStage):
    name = "teacher_forcing"

    def loss(self, model, config, params, batch, key) -> jax.Array:
        return teacher_forcing_loss(model, float(config.sampling.shift), int(config.student.chunk_frames), params,
                                    batch, key)

    def tokens_per_sample(self, config) -> int:
        """The doubled in-context sequence: 2 x (2 condition + video latent frames) x tokens per frame."""
        return 2 * in_context_tokens(config)


STAGE = TeacherForcing()
