"""Generating the HGC-Bench videos with the streaming student (`python -m fc_jax.eval generate`).

Every sample becomes `<out>/<sample.id>.mp4`, the name `score` looks for, so `score --videos=<out>` follows.

- Single-garment mode (the default): the reference is the sample's `src_image`, the garment its `cloth_image`,
  the prompt its caption.
- Multi-garment mode (`switch_frames`): the stream also switches garments at those frames (each at the first
  chunk boundary at or after it). Sample i switches to the cloth images of the NEXT samples in bench order,
  wrapping around: the k-th switch takes the garment of sample (i + k) mod N, N counting the whole bench, so
  `limit` does not change any sample's video.

One `StreamingSession` (one set of compiled functions) serves every sample; each `start` passes the sample's
prompt embedding. All captions still to be generated go through the `EmbeddingCache` in one call before the
first video, so each is encoded once and a caption the cache cannot encode fails the run before anything is
written. Every sample uses the session's seed (the noise depends on the seed and the chunk index only), so a
resumed run makes the same videos as an uninterrupted one.

Resumable: a sample whose mp4 exists is skipped; a video is written as `<id>.mp4.partial` and renamed when
complete (`fc_jax.video.Mp4Writer`), so a killed run never leaves a half video under the final name. A sample
whose image (its own, or a garment it switches to) is missing or unreadable is reported and the run goes on;
an error while generating stops the run (the partial file is removed).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import zlib
from typing import Sequence

import jax
import numpy as np

from fc_jax import images
from fc_jax.eval.bench import Sample
from fc_jax.inference import load_checkpoint
from fc_jax.sampling.frames import chunk_count, switch_chunks
from fc_jax.sampling.streaming import StreamingSession
from fc_jax.text import EmbeddingCache
from fc_jax.video import Mp4Writer

_MAX_NAMED = 10  # captions named in the missing-caption error


@dataclasses.dataclass
class GenerateSummary:
    """What a `generate_bench` run did: sample ids generated and skipped, failures {id: reason}."""

    frames: int
    switch_frames: tuple[int, ...]
    generated: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict:
        """Counts, failure reasons, frames per video and wall seconds (the CLI's summary line)."""
        return {"generated": len(self.generated), "skipped": len(self.skipped), "failed": len(self.failed),
                "failures": self.failed, "frames": self.frames, "switch_frames": list(self.switch_frames),
                "seconds": round(self.seconds, 2)}


def parse_switch_frames(text: str) -> tuple[int, ...]:
    """"40,80" -> (40, 80); "" -> (). ValueError naming an item that is not an integer."""
    frames = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            frames.append(int(item))
        except ValueError:
            raise ValueError(f"--switch_frames expects comma-separated frame numbers (e.g. 40,80); "
                             f"found {item!r}") from None
    return tuple(frames)


def check_switch_frames(switch_frames: Sequence[int], num_frames: int, chunk_frames: int) -> None:
    """ValueError naming the first frame that is not positive, not below `num_frames` or not after the one
    before it, or two switches that fall before the same chunk or in the last one (`switch_chunks`)."""
    previous = None
    for frame in switch_frames:
        if frame <= 0:
            raise ValueError(f"switch frame {frame} must be positive")
        if frame >= num_frames:
            raise ValueError(f"switch frame {frame} must be below the video's {num_frames} frames")
        if previous is not None and frame <= previous:
            raise ValueError(f"switch frames must increase; found {frame} after {previous}")
        previous = frame
    switch_chunks(dict.fromkeys(switch_frames), num_frames, chunk_frames)


def switch_garments(samples: Sequence[Sample], index: int, switch_frames: Sequence[int]) -> dict[int, str]:
    """{frame: cloth image path} for sample `index`: the k-th switch (k = 1, 2, ...) takes the garment of sample
    (index + k) mod len(samples)."""
    return {frame: samples[(index + k) % len(samples)].cloth_image
            for k, frame in enumerate(switch_frames, start=1)}


def caption_contexts(texts: EmbeddingCache, captions: Sequence[str]) -> dict[str, np.ndarray]:
    """Each distinct caption -> its prompt embedding float32 [1, text_len, text_dim], all encoded in one call of
    `texts`. When the cache has no encoder, ValueError naming the captions it lacks."""
    distinct = list(dict.fromkeys(captions))
    missing = [c for c in distinct if c not in texts]
    if missing and texts.encoder is None:
        named = "; ".join(repr(c) for c in missing[:_MAX_NAMED])
        more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
        raise ValueError(f"{len(missing)} caption(s) are not in the embedding cache (the checkpoint's text_cache.npz) "
                         f"and there is no encoder (umt5/) for them: {named}{more}")
    if not distinct:
        return {}
    embeddings, _ = texts(distinct)
    return {caption: embeddings[i : i + 1] for i, caption in enumerate(distinct)}


def random_text_encoder(text_len: int, dim: int, seed: int = 0):
    """A stand-in prompt encoder for random-weight smoke runs: prompts -> (embeddings float32 [B, text_len, dim],
    lengths [B] = text_len), each prompt's rows 0.1·N(0, 1) drawn from (seed, CRC32 of the prompt), so equal
    captions give equal contexts and different captions different ones."""
    def encode(prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = [0.1 * np.random.default_rng([seed, zlib.crc32(p.encode())]).standard_normal((text_len, dim))
                for p in prompts]
        return np.stack(rows).astype(np.float32), np.full(len(prompts), text_len, np.int32)
    return encode


def load_model(config, checkpoint: str | None, tokenizer: str | None = None, random_weights: bool = False,
               seed: int = 0):
    """(dit params, vae params, texts: EmbeddingCache) from `checkpoint` (see `fc_jax.inference.load_checkpoint`),
    or with `random_weights` the config's model randomly initialised and `random_text_encoder` prompts."""
    if checkpoint is not None and random_weights:
        raise ValueError("give either --checkpoint or --random_weights, not both")
    if checkpoint is None and not random_weights:
        raise ValueError("--checkpoint is required (a folder with dit/, vae/ and text_cache.npz or umt5/); "
                         "there is no random-weight default here (--random_weights runs one, as a smoke test)")
    if checkpoint is not None:
        return load_checkpoint(config, checkpoint, tokenizer)
    from fc_jax.models import dit, vae

    key = jax.random.key(seed)
    dit_params = dit.init_params(dit.build_model(config), jax.random.fold_in(key, 1))
    vae_params = vae.init_params(config, jax.random.fold_in(key, 2))
    texts = EmbeddingCache(config.model.text_len,
                           random_text_encoder(config.model.text_len, config.model.text_dim, seed))
    return dit_params, vae_params, texts


def load_tinyworld(folder: str):
    """(student config, student params, vae params, texts: EmbeddingCache, light decoder params or None) of a
    tiny-world weights folder (`fc_jax.tinyworld.weights`)."""
    import jax.numpy as jnp

    from fc_jax.tinyworld import weights

    if not os.path.isfile(weights.part_path("student", folder)):
        raise ValueError(f"--tinyworld_weights={folder}: no student.safetensors there")
    config = weights.configs(folder)["student"]
    part = lambda name: jax.tree.map(jnp.asarray, weights.load_part(name, folder))
    light = part("light_decoder") if os.path.isfile(weights.part_path("light_decoder", folder)) else None
    texts = EmbeddingCache(config.umt5.text_len, weights.text_encoder(config, folder))
    return config, part("student"), part("vae"), texts, light


def build_session(config, dit_params, vae_params, seed: int = 0, decoder: str = "vae",
                  light_decoder_params=None) -> StreamingSession:
    """A session for `generate_bench` decoding with `decoder` ("vae" | "light", which needs
    `light_decoder_params`); its initial context is zeros [1, text_len, text_dim], replaced by each sample's
    prompt embedding at `start`."""
    context = np.zeros((1, config.model.text_len, config.model.text_dim), np.float32)
    return StreamingSession(config, dit_params, vae_params, context, seed=seed, decoder=decoder,
                            light_decoder_params=light_decoder_params if decoder == "light" else None)


def _unreadable_input(sample: Sample, garments: dict[int, str]) -> str | None:
    """None when the sample's images and the garments it switches to all read; else why not (naming the file)."""
    inputs = {"src_image": sample.src_image, "cloth_image": sample.cloth_image,
              **{f"garment of the switch at frame {frame}": path for frame, path in garments.items()}}
    for role, path in inputs.items():
        try:
            images.load_image(path)
        except (FileNotFoundError, ValueError) as e:
            return f"{role}: {e}"
    return None


def _write_video(session: StreamingSession, sample: Sample, context: np.ndarray, path: str, num_frames: int,
                 garments: dict[int, str]) -> int:
    """Stream one sample into `path` (via `path.partial`); the number of frames written."""
    session.start(sample.src_image, sample.cloth_image, context=context)
    with Mp4Writer(path, fps=session.config.video.fps) as writer:
        for frames in session.stream(num_frames, garments, progress=False):
            writer.write(frames)
    return writer.frames_written


def video_path(out_dir: str, sample: Sample) -> str:
    """Where a sample's video goes (and where `score` finds it): `<out_dir>/<id>.mp4`."""
    return os.path.join(out_dir, sample.id + ".mp4")


def generate_bench(session: StreamingSession, samples: Sequence[Sample], texts: EmbeddingCache, out_dir: str,
                   num_frames: int, switch_frames: Sequence[int] = (), limit: int = 0,
                   progress: bool = True) -> GenerateSummary:
    """Write `<out_dir>/<id>.mp4` (uint8, `num_frames` frames at the config's fps) for the first `limit` samples
    (0 = all), skipping those already there; see the module docstring for the modes. Progress and failures go
    to stderr (failures always); returns the summary."""
    chunk_count(num_frames, session.spec.chunk_frames)
    check_switch_frames(switch_frames, num_frames, session.spec.chunk_frames)
    todo = list(samples[: limit or None])
    pending = [s for s in todo if not os.path.isfile(video_path(out_dir, s))]
    contexts = caption_contexts(texts, [s.caption for s in pending])
    os.makedirs(out_dir, exist_ok=True)
    summary = GenerateSummary(frames=num_frames, switch_frames=tuple(switch_frames))
    start = time.perf_counter()
    for i, sample in enumerate(todo):
        tag, path = f"[{i + 1}/{len(todo)}] {sample.id}", video_path(out_dir, sample)
        if os.path.isfile(path):
            summary.skipped.append(sample.id)
            if progress:
                print(f"{tag}: skipped, {path} exists", file=sys.stderr)
            continue
        garments = switch_garments(samples, i, switch_frames)
        reason = _unreadable_input(sample, garments)
        if reason is not None:
            summary.failed[sample.id] = reason
            print(f"{tag}: FAILED: {reason}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        frames = _write_video(session, sample, contexts[sample.caption], path, num_frames, garments)
        summary.generated.append(sample.id)
        if progress:
            print(f"{tag}: {frames} frames in {time.perf_counter() - t0:.1f}s -> {path}", file=sys.stderr)
    summary.seconds = time.perf_counter() - start
    return summary
