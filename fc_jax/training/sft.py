"""Stage 1, the in-context SFT teacher (REFERENCE §5): flow-matching MSE on the video frames only.

Per sample: one table index uniform in [0, 1000) -> the shifted timestep t and its Gaussian-shaped training
weight; `x_t = (1 − σ)·x0 + σ·ε`; the reference and garment latents are prepended clean at t = 0 (RoPE frames 0
and 1); the model sees t truncated to an integer, as upstream feeds it; the loss of each video frame is the mean
over (H, W, C) of the squared error to `ε − x0`, times the sample's weight, averaged over frames and samples.
Caption mixing and the text dropout for guidance are the data pipeline's (`fc_jax.data.pipeline`).
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.data import triplets
from fc_jax.data.pipeline import LatentGeometry, latent_pipeline, load_empty_prompt, take_batches
from fc_jax.data.synthetic import synthetic_empty_prompt, synthetic_latents
from fc_jax.models import dit
from fc_jax.flow import add_noise, flow_target, sample_training_timesteps
from fc_jax.distributed import is_main_process, sync

# Logical axes of each array of a batch; the leading None is the micro-batch (accumulation) axis.
BATCH_AXES = {
    "video": (None, "batch", "frames", None, None, "channels"),
    "reference": (None, "batch", "frames", None, None, "channels"),
    "garment": (None, "batch", "frames", None, None, "channels"),
    "context": (None, "batch", None, None),
}


def sft_loss(model: dit.WanDiT, shift: float, params, batch, key) -> jax.Array:
    """The weighted flow-matching loss of one micro-batch {video [B, F, h, w, C], reference, garment
    [B, 1, h, w, C], context [B, L, D]}."""
    video = batch["video"].astype(jnp.float32)
    b = video.shape[0]
    key_t, key_noise = jax.random.split(key)
    t, weight = sample_training_timesteps(key_t, (b,), shift)
    noise = jax.random.normal(key_noise, video.shape, jnp.float32)
    noisy = add_noise(video, noise, t)
    pred = dit.in_context_forward(
        model, params, batch["reference"], batch["garment"], noisy, jnp.floor(t), batch["context"]
    )
    per_frame = jnp.mean(jnp.square(pred.astype(jnp.float32) - flow_target(video, noise)), axis=(2, 3, 4))
    return jnp.mean(per_frame * weight[:, None])


def loss_fn(model: dit.WanDiT, config, params, batch, key) -> jax.Array:
    """`sft_loss` with the config's shift: the stage's loss (`fc_jax.training.loop` binds model and config)."""
    return sft_loss(model, float(config.sampling.shift), params, batch, key)


def tokens_per_sample(config) -> int:
    """In-context sequence length: (2 condition + video latent frames) x latent tokens per frame."""
    _, ph, pw = config.model.patch_size
    frames = (config.video.num_frames - 1) // 4 + 1
    return (dit.NUM_CONDITION_FRAMES + frames) * (config.video.height // 16 // ph) * (config.video.width // 16 // pw)


def open_latent_data(config, workdir: str):
    """The `FashionLatents` builder of `config.data` (with `data.synthetic`, a synthetic data set written once
    under WORKDIR/synthetic_data by the main process)."""
    data = config.data
    if not data.synthetic:
        if not data.data_dir:
            raise ValueError("config.data.data_dir is empty: point it at a latent data set made by "
                             "`python -m fc_jax.data.preencode` (or set config.data.synthetic=True for a smoke run)")
        return triplets.open_builder("latents", data.data_dir)
    data_dir = os.path.join(workdir, "synthetic_data")
    if is_main_process() and not triplets.FashionLatents(data_dir=data_dir).is_prepared():
        g = LatentGeometry.from_config(config)
        n = int(data.synthetic_examples)
        splits = {
            "train": synthetic_latents(n, g.frames, g.height, g.width, g.channels, g.text_dim, seed=config.train.seed,
                                       max_text_len=g.text_len),
            "eval": synthetic_latents(max(n // 8, 1), g.frames, g.height, g.width, g.channels, g.text_dim,
                                      seed=config.train.seed + 1, max_text_len=g.text_len),
        }
        builder = triplets.write_dataset("latents", data_dir, splits)
        np.save(triplets.empty_prompt_path(builder), synthetic_empty_prompt(g.text_dim, config.train.seed))
    sync("synthetic data written")
    return triplets.open_builder("latents", data_dir)


def make_data(config, builder, host_batch: int, process_index: int, process_count: int):
    """(training batches per host: an endless, shuffled grain pipeline; its bad-record filter; fixed
    evaluation batches: static + dynamic caption, no text dropout)."""
    data, train = config.data, config.train
    geometry = LatentGeometry.from_config(config)
    empty = load_empty_prompt(builder)
    common = dict(on_bad_record=data.on_bad_record, num_threads=data.num_threads, prefetch=data.prefetch,
                  process_index=process_index, process_count=process_count)
    train_data, skipped = latent_pipeline(
        builder, data.split, geometry, empty, batch_size=host_batch, seed=train.seed, shuffle=data.shuffle,
        static_caption_prob=train.static_caption_prob, text_drop_prob=train.text_drop_prob, **common,
    )
    eval_batches = []
    if train.eval_every > 0 and train.eval_batches > 0:
        eval_split = data.eval_split or data.split
        eval_data, _ = latent_pipeline(
            builder, eval_split, geometry, empty, batch_size=host_batch, seed=train.seed, shuffle=False,
            num_epochs=1, static_caption_prob=0.0, text_drop_prob=0.0, **common,
        )
        eval_batches = take_batches(eval_data, int(train.eval_batches))
        if not eval_batches:
            print(f"warning: {builder.name}/{eval_split} has fewer than {host_batch} usable records per process, "
                  f"one evaluation batch; evaluation is off", file=sys.stderr, flush=True)
    return train_data, skipped, eval_batches
