"""The latent triplets a DiT training stage reads, from the config: a `FashionLatents` data set (made by
`python -m fc_jax.data.preencode`) or, with `config.data.synthetic`, a synthetic one written once under the
workdir; and its grain pipelines (training batches per process, fixed evaluation batches)."""

from __future__ import annotations

import os
import sys

import numpy as np

from fc_jax.data import triplets
from fc_jax.data.pipeline import LatentGeometry, latent_pipeline, load_empty_prompt, take_batches
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
