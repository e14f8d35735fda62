"""The student's own latents, for distilling the light decoder where it will decode (issue "a light streaming
decoder"): 45-frame streams of the tiny-world student on training-split conditions, half of them with a garment
switch, their clean chunk latents joined into one array per stream.

    write(path, session, texts, count)  ->  PATH.npy: float16 [count, f, h, w, 48] (f latent frames per stream)

The light-decoder stage draws part of its batches from such a file (`light_decoder_train.sampler_latents`, read
by `fc_jax.training.stages.light_decoder.load_sampler_latents`); the recipe's `sampler_latents` step writes
WORKDIR/sampler_latents.npy from its student.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

SWITCH_FRAMES = (21, 33)  # chunk starts of a 45-frame stream (chunks of 9, 12, 12, 12 frames) a switch lands on


def stream_specs(count: int, *, height: int, width: int, num_frames: int, switch_share: float = 0.5,
                 start_seed: int = 0):
    """The first `count` training-split specs, `switch_share` of them (evenly spread, as the stage's
    `sampler_mask` spreads its clips) switching garments at one of `SWITCH_FRAMES` (by its seed)."""
    from fc_jax.tinyworld.spec import split_specs, with_switch
    from fc_jax.training.stages.light_decoder import sampler_mask

    switching = sampler_mask(count, switch_share)
    for i, spec in enumerate(split_specs("train", count, start_seed=start_seed, height=height, width=width,
                                         num_frames=num_frames)):
        if switching[i]:
            frames = [f for f in SWITCH_FRAMES if f < num_frames]
            spec = with_switch(spec, frames[spec.seed % len(frames)]) if frames else spec
        yield spec


def stream_latents(session, texts, spec) -> np.ndarray:
    """The clean latents [f, h, w, 48] (float16) of `session`'s stream of `spec` (its reference, garment, full
    caption, and its switch where it has one)."""
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import full_caption

    truth = render_sample(spec)
    session.start(truth.reference, truth.garment, texts([full_caption(spec)])[0])
    switches = {spec.switch_frame: truth.switch_garment} if spec.switch_frame else {}
    chunks = [np.asarray(z[0], np.float16)
              for _, z in session.stream(spec.num_frames, switches, progress=False, with_latents=True)]
    return np.concatenate(chunks)


def write(path: str, session, texts, count: int, *, num_frames: int = 45, switch_share: float = 0.5,
          log=lambda line: print(line, file=sys.stderr, flush=True)) -> np.ndarray:
    """Stream `count` training-split specs (`stream_specs`) through `session` (a started-or-not
    `fc_jax.sampling.streaming.StreamingSession`; `texts` its `EmbeddingCache`) and save their latents to `path`
    (.npy, written atomically: a stopped run leaves no partial file). Returns the array."""
    if count < 1:
        raise ValueError(f"sampler latents: count must be >= 1, got {count}")
    began, rows = time.perf_counter(), []
    for i, spec in enumerate(stream_specs(count, height=session.height, width=session.width, num_frames=num_frames,
                                          switch_share=switch_share)):
        rows.append(stream_latents(session, texts, spec))
        if (i + 1) % 16 == 0 or i + 1 == count:
            rate = (i + 1) / (time.perf_counter() - began)
            log(f"sampler latents: {i + 1}/{count} streams, {rate:.2f} streams/s, ETA {(count - i - 1) / rate:.0f} s")
    latents = np.stack(rows)
    tmp = path + ".tmp.npy"
    np.save(tmp, latents)
    os.replace(tmp, path)
    return latents

