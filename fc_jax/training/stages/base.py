"""The base stage: the stand-in for Wan2.2-TI2V-5B's pretraining, text + first frame -> video (the model stage 1
fine-tunes; issue "the tiny world").

Per sample (REFERENCE §1, TI2V): one table index uniform in [0, 1000) -> the shifted timestep t and its training
weight; latent frame 0 (the first video frame, its own latent frame) stays clean at timestep 0, as upstream's
image-to-video gives frame-0 tokens t = 0 and re-inserts the clean latent after every step; the later frames are
`x_t = (1 − σ)·x0 + σ·ε` at t (truncated to an integer, as upstream feeds it); the loss is the weighted squared
error to `ε − x0` over the later frames only. Batches are the latent triplets' video and caption embedding (the
reference and garment latents are not read). Text dropout and caption mixing are the data pipeline's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
from fc_jax.models import dit
from fc_jax.training.stage import SingleNetworkStage, video_tokens


def base_loss(model: dit.WanDiT, shift: float, params, batch, key) -> jax.Array:
    """The weighted flow-matching loss of one micro-batch {video [B, F, h, w, C], context [B, L, D]} over the
    frames after the first."""
    video = batch["video"].astype(jnp.float32)
    if video.shape[1] < 2:
        raise ValueError(f"the base stage needs videos of at least 2 latent frames, found {video.shape[1]}")
    b = video.shape[0]
    key_t, key_noise = jax.random.split(key)
    t, weight = sample_training_timesteps(key_t, (b,), shift)
    noise = jax.random.normal(key_noise, video.shape, jnp.float32)
    noisy = add_noise(video, noise, t)
    pred = dit.ti2v_forward(model, params, video[:, :1], noisy, jnp.floor(t), batch["context"])
    error = jnp.square(pred - flow_target(video, noise))[:, 1:]
    return jnp.mean(jnp.mean(error, axis=(2, 3, 4)) * weight[:, None])


class Base(SingleNetworkStage):
    name = "base"
    batch_axes = {
        "video": (None, "batch", "frames", None, None, "channels"),
        "context": (None, "batch", None, None),
    }

    def loss(self, model, config, params, batch, key) -> jax.Array:
        return base_loss(model, float(config.sampling.shift), params, batch, key)

    def tokens_per_sample(self, config) -> int:
        """Video tokens of one sample (latent frames x tokens per latent frame)."""
        return video_tokens(config)


STAGE = Base()
