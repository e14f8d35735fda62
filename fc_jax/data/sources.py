"""What the training stages read, from the config, with their grain pipelines (training batches per process,
endless, shuffled, checkpointable; fixed evaluation batches):
- latent triplets (the DiT stages): a `FashionLatents` data set made by `python -m fc_jax.data.preencode`, or with
  `config.data.synthetic` a synthetic one written once under the workdir (`open_latent_data`, `latent_batches`);
- pixel clips (the VAE stage): `FashionTriplets` videos (curation's, or the tiny world's, which the stage
  renders itself: this layer imports nothing above it), cut into random clips (`clip_batches`)."""

from __future__ import annotations

import os
import sys

import grain
import numpy as np

from fc_jax.data import triplets
from fc_jax.data.pipeline import (BadRecord, LatentGeometry, RecordSource, SkipBadRecords, check_triplet_record,
                                  latent_pipeline, load_empty_prompt, take_batches)
from fc_jax.data.synthetic import synthetic_empty_prompt, synthetic_latents
from fc_jax.distributed import is_main_process, sync


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


def latent_batches(config, builder, host_batch: int, process_index: int, process_count: int):
    """(training batches per host: an endless, shuffled grain pipeline; its bad-record filter; fixed
    evaluation batches: the full caption (dynamic + static), no text dropout)."""
    data, train = config.data, config.train
    geometry = LatentGeometry.from_config(config)
    empty = load_empty_prompt(builder)
    common = dict(on_bad_record=data.on_bad_record, num_threads=data.num_threads, prefetch=data.prefetch,
                  process_index=process_index, process_count=process_count)
    train_data, skipped = latent_pipeline(
        builder, data.split, geometry, empty, batch_size=host_batch, seed=train.seed, shuffle=data.shuffle,
        dynamic_caption_prob=train.dynamic_caption_prob, text_drop_prob=train.text_drop_prob, **common,
    )
    eval_batches = []
    if train.eval_every > 0 and train.eval_batches > 0:
        eval_split = data.eval_split or data.split
        eval_data, _ = latent_pipeline(
            builder, eval_split, geometry, empty, batch_size=host_batch, seed=train.seed, shuffle=False,
            num_epochs=1, dynamic_caption_prob=0.0, text_drop_prob=0.0, **common,
        )
        eval_batches = take_batches(eval_data, int(train.eval_batches))
        if not eval_batches:
            print(f"warning: {builder.name}/{eval_split} has fewer than {host_batch} usable records per process, "
                  f"one evaluation batch; evaluation is off", file=sys.stderr, flush=True)
    return train_data, skipped, eval_batches


def negative_prompt(config, builder) -> np.ndarray:
    """The real score's unconditional text embedding [n, text_dim] (float32), the first found of:
    1. `config.sampling.negative_embedding`: an .npy file holding it;
    2. the embedding of `config.sampling.negative_prompt` (the authors' negative prompt by default) that
       `python -m fc_jax.data.preencode` wrote beside the latent data set (its text must match);
    3. with `config.data.synthetic` (no text encoder there): the data set's empty-prompt embedding.
    A real data set without one (preencoded before negative prompts were stored) is an error naming the fixes."""
    from fc_jax.data.pipeline import load_negative_prompt

    path, dim = config.sampling.negative_embedding, config.model.text_dim
    if path:
        embedding = np.load(path, allow_pickle=False)
        if embedding.ndim != 2 or embedding.shape[1] != dim or embedding.shape[0] > config.model.text_len:
            raise ValueError(f"config.sampling.negative_embedding {path}: expected a [n <= {config.model.text_len}, "
                             f"{dim}] array; found {embedding.shape}")
        return embedding.astype(np.float32)
    embedding = load_negative_prompt(builder, config.sampling.negative_prompt)
    if embedding is not None:
        return embedding.astype(np.float32)
    if config.data.synthetic:
        return load_empty_prompt(builder).astype(np.float32)
    raise FileNotFoundError(
        f"{builder.name} under {builder.data_dir} holds no negative-prompt embedding (negative_prompt.npy): run "
        f"`python -m fc_jax.data.preencode` again, or set config.sampling.negative_embedding to an .npy [n, {dim}] "
        f"embedding of config.sampling.negative_prompt")


class RandomClip(grain.transforms.RandomMap):
    """Triplet record -> {"video": uint8 [clip_frames, h, w, 3] starting at a uniformly drawn frame, "id"}: the
    whole frame, or with `crop = (h, w)` a window at a uniformly drawn position (the same in every frame)."""

    def __init__(self, clip_frames: int, crop: tuple[int, int] | None = None):
        self.clip_frames = int(clip_frames)
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))

    def random_map(self, example, rng: np.random.Generator):
        if isinstance(example, BadRecord):  # dropped (and counted) by the filter after this
            return example
        video = example["video"]
        start = int(rng.integers(0, video.shape[0] - self.clip_frames + 1))
        video = video[start : start + self.clip_frames]
        if self.crop is not None:
            (h, w), (height, width) = self.crop, video.shape[1:3]
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            video = video[:, top : top + h, left : left + w]
        return {"video": video, "id": example["id"]}


def clip_size(config, clips) -> tuple[int, int]:
    """(height, width) of training clips of `config`'s videos: `clips.crop` (a section with `clip_frames` and
    `crop`, e.g. `config.vae_train`) when set (a multiple of 16 within the frame), else the whole frame."""
    v = config.video
    crop = clips.get("crop", None)
    if not crop:
        return int(v.height), int(v.width)
    h, w = (int(c) for c in crop)
    if h % 16 or w % 16 or not (0 < h <= v.height and 0 < w <= v.width):
        raise ValueError(f"crop {tuple(crop)}: expected (height, width), multiples of 16 within "
                         f"the {v.height}x{v.width} frames")
    return h, w


def clip_batches(config, clips, builder, host_batch: int, process_index: int, process_count: int):
    """(training batches of `clips.clip_frames`-frame clips per host (`clips`: a config section such as
    `config.vae_train`), cut to `clips.crop` windows where set: an endless, shuffled grain pipeline; its bad-record filter; fixed evaluation batches: the first
    eval records' whole videos, all frames at full size: what a video's encode and decode must get right, chunks
    beyond the training clips included)."""
    data, v = config.data, config.video
    frames = int(clips.clip_frames)
    if (frames - 1) % 4 or frames > v.num_frames:
        raise ValueError(f"clip_frames {frames}: must be 4k+1 and at most the videos' "
                         f"{v.num_frames} frames")
    check = lambda ex: check_triplet_record(ex, v.num_frames, v.height, v.width)
    skip = SkipBadRecords(data.on_bad_record)
    options = grain.ReadOptions(num_threads=data.num_threads, prefetch_buffer_size=data.prefetch)

    def source(split):
        return grain.MapDataset.source(RecordSource(builder, split)).slice(slice(process_index, None, process_count))

    train = source(data.split).shuffle(seed=config.train.seed) if data.shuffle else source(data.split)
    crop = clip_size(config, clips) if clips.get("crop", None) else None
    train = train.repeat(None).map(check).random_map(RandomClip(frames, crop), seed=config.train.seed)
    train = train.to_iter_dataset(options).filter(skip).batch(host_batch, drop_remainder=True)
    eval_batches = []
    if config.train.eval_every > 0 and config.train.eval_batches > 0:
        whole = lambda ex: {"video": ex["video"], "id": ex["id"]}
        ev = source(data.eval_split or data.split).map(check).to_iter_dataset(options)
        ev = ev.filter(SkipBadRecords(data.on_bad_record)).map(whole).batch(host_batch, drop_remainder=True)
        eval_batches = take_batches(ev, int(config.train.eval_batches))
    return train, skip, eval_batches
