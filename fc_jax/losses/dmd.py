"""Distribution-matching distillation losses (REFERENCE §5, stage 3), in the style of `optax.losses`: arrays in,
per-example loss out, safe under `jax.grad`, `jax.vmap` and `jax.jit`.

Latents are `[B, F, H, W, C]` (channels-last). `real_x0` / `fake_x0` are the real score's (guided) and the
critic's x0 predictions for the generated latents after re-noising.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dmd_gradient(generated, real_x0, fake_x0):
    """The normalised DMD gradient: (fake − real) / mean|generated − real| per example (over F, H, W, C),
    NaN/Inf replaced by finite numbers. No gradient flows through it. [B, F, H, W, C]."""
    generated, real_x0, fake_x0 = (jax.lax.stop_gradient(a.astype(jnp.float32)) for a in (generated, real_x0, fake_x0))
    normalizer = jnp.abs(generated - real_x0).mean(axis=(1, 2, 3, 4), keepdims=True)
    return jnp.nan_to_num((fake_x0 - real_x0) / normalizer)


def _per_frame_mse_to_target(generated, grad):
    """mean over (H, W, C) of (x − sg(x − grad))², per frame: [B, F]."""
    x = generated.astype(jnp.float32)
    target = jax.lax.stop_gradient(x - grad)
    return jnp.square(x - target).mean(axis=(2, 3, 4))


def dmd_loss(generated, real_x0, fake_x0):
    """Plain DMD: 0.5 · mean over (F, H, W, C) of (x − sg(x − grad))², per example [B]."""
    grad = dmd_gradient(generated, real_x0, fake_x0)
    return 0.5 * _per_frame_mse_to_target(generated, grad).mean(axis=1)


def reward_weights(frame_rewards, num_latent_frames: int, chunk_frames: int = 3, temperature: float = 0.2):
    """Per-latent-frame weights from per-video-frame rewards, as the authors aggregate them.

    frame_rewards [B, 4F−3] (one score per decoded frame) → per latent frame (frame 0 alone, then groups of 4)
    → per chunk of `chunk_frames` latent frames (mean, repeated over the chunk) → softmax(r / −τ) over the F
    latent frames: lower reward, larger weight; each row sums to 1. Returns [B, F].
    """
    b, p = frame_rewards.shape
    if p != 4 * (num_latent_frames - 1) + 1:
        raise ValueError(
            f"{num_latent_frames} latent frames decode to {4 * (num_latent_frames - 1) + 1} frames; got {p} rewards"
        )
    if num_latent_frames % chunk_frames:
        raise ValueError(f"{num_latent_frames} latent frames are not a whole number of {chunk_frames}-frame chunks")
    r = frame_rewards.astype(jnp.float32)
    latent = jnp.concatenate([r[:, :1], r[:, 1:].reshape(b, -1, 4).mean(axis=-1)], axis=1)
    chunk = latent.reshape(b, -1, chunk_frames).mean(axis=-1, keepdims=True)
    per_frame = jnp.broadcast_to(chunk, (b, num_latent_frames // chunk_frames, chunk_frames)).reshape(b, -1)
    return jax.nn.softmax(per_frame / -temperature, axis=-1)


def weighted_dmd_loss(generated, real_x0, fake_x0, frame_weights):
    """0.5 · Σ_f w_f · mean over (H, W, C) of (x_f − sg(x_f − grad_f))², per example [B]; `frame_weights` [B, F]
    (no gradient through them). w = 1/F is exactly `dmd_loss`."""
    grad = dmd_gradient(generated, real_x0, fake_x0)
    w = jax.lax.stop_gradient(frame_weights)
    return 0.5 * (w * _per_frame_mse_to_target(generated, grad)).sum(axis=1)


def gr_dmd_loss(generated, real_x0, fake_x0, frame_rewards, *, temperature: float = 0.2, chunk_frames: int = 3):
    """Gradient-reweighted DMD: `weighted_dmd_loss` with w = `reward_weights(frame_rewards, F, chunk_frames,
    temperature)`. Uniform rewards give w = 1/F, i.e. exactly `dmd_loss`."""
    w = reward_weights(frame_rewards, generated.shape[1], chunk_frames, temperature)
    return weighted_dmd_loss(generated, real_x0, fake_x0, w)
