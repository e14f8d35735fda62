"""Stage 1, the in-context SFT teacher (REFERENCE §5): flow-matching MSE on the video frames only.

Per sample: one table index uniform in [0, 1000) -> the shifted timestep t and its Gaussian-shaped training
weight; `x_t = (1 − σ)·x0 + σ·ε`; the reference and garment latents are prepended clean at t = 0 (RoPE frames 0
and 1), or, with `model.condition = "channel_concat"` (the paper's baseline), joined to every video frame on
channels (`dit.channel_concat_inputs`); the model sees t truncated to an integer, as upstream feeds it; the loss of each video frame is the mean
over (H, W, C) of the squared error to `ε − x0`, times the sample's weight, averaged over frames and samples.
Caption mixing and the text dropout for guidance are the data pipeline's (`fc_jax.data.pipeline`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
from fc_jax.models import dit
from fc_jax.training.stage import SingleNetworkStage, in_context_tokens, video_tokens


def sft_loss(model: dit.WanDiT, shift: float, params, batch, key) -> jax.Array:
    """The weighted flow-matching loss of one micro-batch {video [B, F, h, w, C], reference, garment
    [B, 1, h, w, C], context [B, L, D]}."""
    video = batch["video"].astype(jnp.float32)
    b = video.shape[0]
    key_t, key_noise = jax.random.split(key)
    t, weight = sample_training_timesteps(key_t, (b,), shift)
    noise = jax.random.normal(key_noise, video.shape, jnp.float32)
    noisy = add_noise(video, noise, t)
    pred = dit.conditioned_forward(
        model, params, batch["reference"], batch["garment"], noisy, jnp.floor(t), batch["context"]
    )
    per_frame = jnp.mean(jnp.square(pred.astype(jnp.float32) - flow_target(video, noise)), axis=(2, 3, 4))
    return jnp.mean(per_frame * weight[:, None])


class SFT(SingleNetworkStage):
    name = "sft"

    def loss(self, model, config, params, batch, key) -> jax.Array:
        return sft_loss(model, float(config.sampling.shift), params, batch, key)

    def tokens_per_sample(self, config) -> int:
        if config.model.get("condition", "in_context") == "channel_concat":
            return video_tokens(config)
        return in_context_tokens(config)


STAGE = SFT()
