"""The base stage: the stand-in for Wan2.2-TI2V-5B's pretraining, text + first frame -> video (the model stage 1
fine-tunes; issue "the tiny world").

Per sample (REFERENCE §1, TI2V): one table index uniform in [0, 1000) -> the shifted timestep t and its training
weight; latent frame 0 (the first video frame, its own latent frame) stays clean at timestep 0, as upstream's
image-to-video gives frame-0 tokens t = 0 and re-inserts the clean latent after every step; the later frames are
`x_t = (1 − σ)·x0 + σ·ε` at t (truncated to an integer, as upstream feeds it); the loss is the weighted squared
error to `ε − x0` over the later frames only. With `train.text_to_video_prob` = p > 0, a sample is text-to-video
instead with probability p (the other task of Wan2.2's TI2V model): frame 0 is noised at t like the others and
counts in its loss (each sample's loss is the mean over the frames it counts). Batches are the latent triplets'
video and caption embedding (the reference and garment latents are not read). Text dropout and caption mixing are
the data pipeline's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
from fc_jax.models import dit
from fc_jax.training.stage import SingleNetworkStage, video_tokens


def base_loss(model: dit.WanDiT, shift: float, params, batch, key, text_to_video_prob: float = 0.0) -> jax.Array:
    """The weighted flow-matching loss of one micro-batch {video [B, F, h, w, C], context [B, L, D]}: over the
    frames after the first for image-to-video samples, over every frame for the text-to-video ones (a share
    `text_to_video_prob` of the samples, drawn per sample)."""
    if not 0.0 <= text_to_video_prob <= 1.0:
        raise ValueError(f"train.text_to_video_prob must be in [0, 1], found {text_to_video_prob}")
    video = batch["video"].astype(jnp.float32)
    if video.shape[1] < 2:
        raise ValueError(f"the base stage needs videos of at least 2 latent frames, found {video.shape[1]}")
    b = video.shape[0]
    key_t, key_noise = jax.random.split(key)
    t, weight = sample_training_timesteps(key_t, (b,), shift)
    noise = jax.random.normal(key_noise, video.shape, jnp.float32)
    noisy = add_noise(video, noise, t)
    t2v = jax.random.uniform(jax.random.fold_in(key, 2), (b,)) < text_to_video_prob  # [B]
    first = jnp.where(t2v[:, None, None, None, None], noisy[:, :1], video[:, :1])
    latents, timesteps = dit.ti2v_inputs(first, noisy, jnp.floor(t))
    timesteps = timesteps.at[:, 0].set(jnp.where(t2v, jnp.floor(t), 0.0))
    pred = model.apply({"params": params}, latents, timesteps, batch["context"]).astype(jnp.float32)
    error = jnp.mean(jnp.square(pred - flow_target(video, noise)), axis=(2, 3, 4))  # [B, F]
    counted = jnp.ones_like(error).at[:, 0].set(t2v.astype(jnp.float32))
    return jnp.mean(jnp.sum(error * counted, axis=1) / jnp.sum(counted, axis=1) * weight)


class Base(SingleNetworkStage):
    name = "base"
    batch_axes = {
        "video": (None, "batch", "frames", None, None, "channels"),
        "context": (None, "batch", None, None),
    }

    def loss(self, model, config, params, batch, key) -> jax.Array:
        return base_loss(model, float(config.sampling.shift), params, batch, key,
                         float(config.train.get("text_to_video_prob", 0.0)))

    def tokens_per_sample(self, config) -> int:
        """Video tokens of one sample (latent frames x tokens per latent frame)."""
        return video_tokens(config)


STAGE = Base()
