"""grain pipelines over the TFDS data sets of `fc_jax.data.triplets`: per-host sharding, shuffling, batching,
prefetch, all deterministic by seed, with an iterator state that orbax checkpoints.

Every record is decoded and checked against the run's geometry. A record that does not parse (corrupt bytes) or
does not fit (wrong shapes) becomes a `BadRecord` naming it (data set, split, index, shard file and position,
and its id where readable); by config it is counted and skipped with a warning, or it stops the job
(`BadRecordError`).

Per-sample randomness of the data policy (which caption, whether the text is dropped for guidance) is drawn
by grain's `random_map` from the pipeline seed and the record's position in the stream, so it is reproduced
exactly when the iterator is restored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import grain
import numpy as np

from fc_jax.data.triplets import negative_prompt_paths, record_name

log = logging.getLogger(__name__)

ON_BAD_RECORD = ("skip", "raise")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that could not be used: its name and why."""

    name: str
    reason: str


class BadRecordError(ValueError):
    """A corrupt or mis-shaped record met with `on_bad_record="raise"`."""


class RecordSource:
    """Random access to a split's records, decoded to numpy dicts (each with `_name`), or `BadRecord`."""

    def __init__(self, builder, split: str):
        if split not in builder.info.splits:
            raise ValueError(f"{builder.name} under {builder.data_dir} has no split {split!r}; "
                             f"it has {sorted(builder.info.splits)}")
        self._builder = builder
        self._split = split
        self._raw = builder.as_data_source(split=split).data_source
        self._features = builder.info.features

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> dict | BadRecord:
        index = int(index)
        name = record_name(self._builder, self._split, index)
        try:
            raw = self._raw[index]
            example = self._features.deserialize_example_np(raw)
        except Exception as e:  # a corrupt record: any decoding failure names it instead of killing the job
            return BadRecord(name, f"does not decode ({type(e).__name__}: {e})")
        example = {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in example.items()}
        example["_name"] = f"{name} id={example.get('id', '?')!r}"
        return example

    def __repr__(self) -> str:
        return f"RecordSource({self._builder.name}/{self._split}, {len(self)} records)"


@dataclasses.dataclass(frozen=True)
class LatentGeometry:
    """The shapes a training record must have: video latents [frames, height, width, channels], conditions
    [1, height, width, channels], text embeddings [<= text_len, text_dim]."""

    frames: int
    height: int
    width: int
    channels: int
    text_len: int
    text_dim: int

    @classmethod
    def from_config(cls, config) -> "LatentGeometry":
        v = config.video
        if (v.num_frames - 1) % 4 or v.height % 16 or v.width % 16:
            raise ValueError(f"config.video {v.num_frames} frames of {v.height}x{v.width}: frames must be 4k+1 and "
                             f"height, width multiples of 16")
        return cls((v.num_frames - 1) // 4 + 1, v.height // 16, v.width // 16, config.model.in_channels,
                   config.model.text_len, config.model.text_dim)


def _shape_problems(example: dict, expected: dict[str, tuple]) -> list[str]:
    problems = []
    for key, want in expected.items():
        if key not in example:
            problems.append(f"{key} missing")
            continue
        found = tuple(np.shape(example[key]))
        if len(found) != len(want) or any(w is not None and f != w for f, w in zip(found, want)):
            shown = tuple("*" if w is None else w for w in want)
            problems.append(f"{key} has shape {found}, expected {shown}")
    return problems


def check_latent_record(example, geometry: LatentGeometry):
    """The record, or a BadRecord saying which arrays do not fit `geometry`."""
    if isinstance(example, BadRecord):
        return example
    g = geometry
    problems = _shape_problems(example, {
        "video_latents": (g.frames, g.height, g.width, g.channels),
        "reference_latent": (1, g.height, g.width, g.channels),
        "garment_latent": (1, g.height, g.width, g.channels),
        "dynamic_embedding": (None, g.text_dim),
        "full_embedding": (None, g.text_dim),
    })
    for key in ("dynamic_embedding", "full_embedding"):
        n = np.shape(example.get(key, np.zeros((0, 0))))[0]
        if n > g.text_len:
            problems.append(f"{key} has {n} tokens, more than text_len {g.text_len}")
    for key in ("video_latents", "reference_latent", "garment_latent"):
        if key in example and not np.isfinite(example[key]).all():
            problems.append(f"{key} holds NaN or Inf values")
    if problems:
        return BadRecord(example["_name"], "; ".join(problems))
    return example


def check_triplet_record(example, num_frames: int, height: int, width: int):
    """The record, or a BadRecord saying which images do not have the run's geometry."""
    if isinstance(example, BadRecord):
        return example
    problems = _shape_problems(example, {
        "video": (num_frames, height, width, 3),
        "reference": (height, width, 3),
        "garment": (height, width, 3),
    })
    if problems:
        return BadRecord(example["_name"], "; ".join(problems))
    return example


def _pad_text(embedding: np.ndarray, text_len: int) -> np.ndarray:
    out = np.zeros((text_len, embedding.shape[1]), np.float32)
    out[: embedding.shape[0]] = embedding
    return out


class PrepareLatents(grain.transforms.RandomMap):
    """Latent record -> training example: caption mixing (the dynamic caption alone with `dynamic_caption_prob`,
    else dynamic + static: the authors' `en_long[0]` alone with probability 0.7, else `en_long[0] + " " +
    en_long[1]`, `datasets/fashion_dataset.py`), text dropout to the empty prompt with `text_drop_prob`,
    embeddings zero-padded to text_len."""

    def __init__(self, geometry: LatentGeometry, empty_prompt: np.ndarray, dynamic_caption_prob: float,
                 text_drop_prob: float):
        if empty_prompt.ndim != 2 or empty_prompt.shape[1] != geometry.text_dim:
            raise ValueError(f"the empty-prompt embedding must be [n, {geometry.text_dim}]; found {empty_prompt.shape}")
        self.geometry = geometry
        self.empty = _pad_text(empty_prompt.astype(np.float32), geometry.text_len)
        self.dynamic_caption_prob = float(dynamic_caption_prob)
        self.text_drop_prob = float(text_drop_prob)

    def random_map(self, example, rng: np.random.Generator):
        if isinstance(example, BadRecord):
            return example
        use_dynamic = rng.random() < self.dynamic_caption_prob
        drop = rng.random() < self.text_drop_prob
        if drop:
            context = self.empty
        else:
            text = example["dynamic_embedding"] if use_dynamic else example["full_embedding"]
            context = _pad_text(np.asarray(text, np.float32), self.geometry.text_len)
        return {
            "video": np.asarray(example["video_latents"], np.float32),
            "reference": np.asarray(example["reference_latent"], np.float32),
            "garment": np.asarray(example["garment_latent"], np.float32),
            "context": context,
            "id": example["id"],
        }


class SkipBadRecords(grain.transforms.Filter):
    """Drops `BadRecord`s, counting them and warning with their names; or raises on the first (`"raise"`)."""

    def __init__(self, on_bad_record: str):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}; got {on_bad_record!r}")
        self.on_bad_record = on_bad_record
        self.skipped: list[str] = []

    def filter(self, element) -> bool:
        if not isinstance(element, BadRecord):
            return True
        message = f"bad record {element.name}: {element.reason}"
        if self.on_bad_record == "raise":
            raise BadRecordError(message + " (set config.data.on_bad_record='skip' to skip such records)")
        self.skipped.append(element.name)
        log.warning("%s; skipped (%d so far)", message, len(self.skipped))
        return False


def _host_shard(ds: grain.MapDataset, process_index: int, process_count: int) -> grain.MapDataset:
    if process_count > 1:
        ds = ds.slice(slice(process_index, None, process_count))
    return ds


def latent_pipeline(
    builder,
    split: str,
    geometry: LatentGeometry,
    empty_prompt: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    dynamic_caption_prob: float = 0.7,
    text_drop_prob: float = 0.1,
    on_bad_record: str = "skip",
    num_threads: int = 8,
    prefetch: int = 16,
    process_index: int = 0,
    process_count: int = 1,
    start: int = 0,
    stop: int | None = None,
) -> tuple[grain.IterDataset, SkipBadRecords]:
    """Batches (per host) of {video [B, F, h, w, C], reference, garment [B, 1, h, w, C], context [B, L, D],
    id [B]} from a `FashionLatents` split; `num_epochs=None` repeats forever (reshuffled each epoch).
    `start`/`stop` restrict the split to a range of records (before host sharding). Returns the data set
    (`iter()` it; the iterator's state checkpoints) and the filter that counts skipped records."""
    ds = grain.MapDataset.source(RecordSource(builder, split)).seed(seed)
    ds = ds.slice(slice(start, stop))
    ds = _host_shard(ds, process_index, process_count)
    if len(ds) == 0:
        raise ValueError(f"{builder.name}/{split}: no records for process {process_index} of {process_count}")
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    ds = ds.map(lambda ex: check_latent_record(ex, geometry))
    ds = ds.random_map(PrepareLatents(geometry, empty_prompt, dynamic_caption_prob, text_drop_prob))
    skip = SkipBadRecords(on_bad_record)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    it = it.filter(skip).batch(batch_size, drop_remainder=True)
    return it, skip


def triplet_pipeline(
    builder,
    split: str,
    *,
    num_frames: int,
    height: int,
    width: int,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    on_bad_record: str = "skip",
    num_threads: int = 4,
    prefetch: int = 8,
) -> tuple[grain.IterDataset, SkipBadRecords]:
    """One pass, in order, over records [start, stop) of a `FashionTriplets` split: batches of {video uint8
    [B, F, H, W, 3], reference, garment [B, H, W, 3], captions, garment_type, source, id}; the last batch may
    be short."""
    ds = grain.MapDataset.source(RecordSource(builder, split)).slice(slice(start, stop))
    ds = ds.map(lambda ex: check_triplet_record(ex, num_frames, height, width))
    skip = SkipBadRecords(on_bad_record)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    it = it.filter(skip).map(_drop_private).batch(batch_size, drop_remainder=False)
    return it, skip


def _drop_private(example: dict) -> dict:
    return {k: v for k, v in example.items() if not k.startswith("_")}


def load_empty_prompt(builder) -> np.ndarray:
    """The empty-prompt embedding stored beside a latent data set."""
    from fc_jax.data.triplets import empty_prompt_path

    path = empty_prompt_path(builder)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{path} not found: a latent data set keeps the empty-prompt embedding there (written by "
            f"`python -m fc_jax.data.preencode`)"
        ) from e


class NegativePromptMismatch(ValueError):
    """The negative-prompt embedding beside a data set encodes another prompt than the configured one."""


def load_negative_prompt(builder, prompt: str) -> np.ndarray | None:
    """The embedding [n, d] of `prompt` stored beside a latent data set as its negative prompt (written by
    `python -m fc_jax.data.preencode`), or None when the data set has none. Raises `NegativePromptMismatch` when
    the stored one encodes another prompt."""
    embedding_path, text_path = negative_prompt_paths(builder)
    if not os.path.exists(embedding_path):
        return None
    with open(text_path, encoding="utf-8") as f:
        stored = f.read()
    if stored != prompt:
        raise NegativePromptMismatch(
            f"{embedding_path} encodes the negative prompt {stored[:60]!r}..., the config asks for {prompt[:60]!r}...: "
            f"set config.sampling.negative_prompt to the stored one, or config.sampling.negative_embedding to an "
            f".npy embedding of the one you want")
    return np.load(embedding_path, allow_pickle=False)


def take_batches(dataset: grain.IterDataset, count: int) -> list[dict[str, Any]]:
    """The first `count` batches of a pipeline, materialised (fixed evaluation batches)."""
    it = iter(dataset)
    batches = []
    for _ in range(count):
        try:
            batches.append(next(it))
        except StopIteration:
            break
    return batches
