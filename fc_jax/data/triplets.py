"""TFDS data sets (ArrayRecord files, written and read without TensorFlow) for training triplets.

Two builders share one pattern: the examples to write are handed to the builder (an iterable per split), TFDS
serialises them into ArrayRecord shards, and reading goes through `builder.as_data_source(split)` (random access,
numpy decoding), which `fc_jax.data.pipeline` feeds to grain.

- `FashionTriplets`: pixels. `video` uint8 [F, H, W, 3], `reference` and `garment` uint8 [H, W, 3], the static
  caption (appearance) and the dynamic caption (motion), the garment type and the source metadata (JSON text).
- `FashionLatents`: what `python -m fc_jax.data.preencode` makes of it. Normalised VAE latents `video_latents`
  [f, h, w, 48], `reference_latent` / `garment_latent` [1, h, w, 48]; umT5 embeddings of the dynamic caption and
  of dynamic + " " + static (the authors' mixed captions: their `en_long[0]` alone, or `en_long[0] + " " +
  en_long[1]`), each trimmed to its true length [n, d]; plus the text fields. Written once beside the data set:
  the empty-prompt embedding (guidance dropout; `empty_prompt.npy`, see `empty_prompt_path`) and the negative
  prompt's (the real score's and the teacher sampler's unconditional text; `negative_prompt.npy` with the prompt
  it encodes in `negative_prompt.txt`, see `negative_prompt_paths`).

Shapes are left variable in the feature spec; the pipeline checks every record against the run's geometry and
skips (or stops on) one that does not fit, naming it.

A data set may also grow in parts: each `<data_dir>/part-NNNNN` folder holds a complete data set of the same
kind (written once, never changed), and `open_builder(kind, data_dir)` reads all of them as one
(`tfds.builder_from_directories`: each split is the concatenation of the parts' splits, in part order). The
curation pipeline (`fc_jax.data.curate`) writes its output so, one new part per run that found new triplets.

Real data comes from a manifest in the authors' layout (`examples_from_manifest`): a CSV with columns `video`
(an .mp4; its reference image `<stem>_src.png` and garment image `<stem>_cloth.png` beside it) and `prompt` (JSON
whose `en_long` holds [dynamic caption, static caption]: motion first, appearance second, as in the authors'
`assets/examples/meta_train.csv`), optionally `garment_type`. Videos are decoded with PyAV (`pip install av`);
frames and reference are resized to cover the target and centre-cropped, the garment is resized to fit and
padded on white, with the authors' training resampling (`fc_jax.images`, rule "training").
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

TEXT_FIELDS = ("id", "static_caption", "dynamic_caption", "garment_type", "source")
PART = re.compile(r"part-\d{5}")  # the folder of one part of a data set written in parts


def _text_features() -> dict:
    return {name: tfds.features.Text() for name in TEXT_FIELDS}


def triplet_features() -> tfds.features.FeaturesDict:
    u8 = lambda shape: tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib")
    return tfds.features.FeaturesDict(
        {
            "video": u8((None, None, None, 3)),
            "reference": u8((None, None, 3)),
            "garment": u8((None, None, 3)),
            **_text_features(),
        }
    )


def latent_features() -> tfds.features.FeaturesDict:
    f32 = lambda rank: tfds.features.Tensor(shape=(None,) * rank, dtype=np.float32, encoding="bytes")
    return tfds.features.FeaturesDict(
        {
            "video_latents": f32(4),
            "reference_latent": f32(4),
            "garment_latent": f32(4),
            "dynamic_embedding": f32(2),
            "full_embedding": f32(2),
            **_text_features(),
        }
    )


class _ExamplesBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder that writes the examples it is given: `examples={"train": iterable of dicts, ...}`. Built
    without `examples`, it reads an existing data set."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
        # Nothing is downloaded. (TFDS's default looks for a checksums file beside the code through
        # `importlib_resources`, which recent etils no longer installs.)
        return None

    def __init__(self, *, examples: Mapping[str, Iterable[dict]] | None = None, **kwargs):
        self._examples = examples
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def is_prepared(self) -> bool:
        # TFDS warns about any version folder without dataset_info.json, i.e. about every data set not written yet.
        return (epath.Path(self.data_dir) / "dataset_info.json").exists() and super().is_prepared()

    # Nothing is downloaded: no "Downloading and preparing dataset ..." / "... downloaded and prepared" banners.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager):
        if self._examples is None:
            raise ValueError(
                f"{self.name}: no data set at {self.data_dir} and no examples given to write one; build it with "
                f"write_dataset(...) or `python -m fc_jax.data.preencode`"
            )
        return {split: self._generate_examples(examples) for split, examples in self._examples.items()}

    def _generate_examples(self, examples: Iterable[dict]) -> Iterator[tuple[str, dict]]:
        for example in examples:
            yield example["id"], example


class FashionTriplets(_ExamplesBuilder):
    DESCRIPTION = "Garment video triplets: video frames, reference image, garment image, captions, metadata."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=triplet_features())


class FashionLatents(_ExamplesBuilder):
    DESCRIPTION = "Pre-encoded triplets: VAE latents of video, reference and garment; umT5 caption embeddings."
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "First version.",
                     "2.0.0": "dynamic_embedding (the dynamic caption alone) replaces static_embedding, and "
                              "full_embedding is dynamic + static: the authors' caption order."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=latent_features())


BUILDERS = {"triplets": FashionTriplets, "latents": FashionLatents}


def part_dirs(data_dir: str) -> list[str]:
    """The `part-NNNNN` folders directly under `data_dir`, in order (finished or not)."""
    if not os.path.isdir(data_dir):
        return []
    return [os.path.join(data_dir, n) for n in sorted(os.listdir(data_dir))
            if PART.fullmatch(n) and os.path.isdir(os.path.join(data_dir, n))]


def open_builder(kind: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The prepared data set of `kind` ("triplets" | "latents") under `data_dir`: the one written there, or else
    the union of the prepared parts in its `part-NNNNN` folders, read as one data set."""
    builder = BUILDERS[kind](data_dir=data_dir)
    if builder.is_prepared():
        return builder
    parts = [BUILDERS[kind](data_dir=d) for d in part_dirs(data_dir)]
    prepared = [p.data_dir for p in parts if p.is_prepared()]
    if prepared:
        return tfds.builder_from_directories(prepared)
    raise FileNotFoundError(
        f"no {builder.name} data set under {data_dir} (looked for {builder.data_dir} and part-NNNNN folders); "
        + ("write one with fc_jax.data.triplets.write_dataset" if kind == "triplets"
           else "make one with `python -m fc_jax.data.preencode`")
    )


def write_dataset(kind: str, data_dir: str, splits: Mapping[str, Iterable[dict]]) -> tfds.core.DatasetBuilder:
    """Write `splits` (split name -> iterable of example dicts) as a `kind` data set under `data_dir`."""
    builder = BUILDERS[kind](data_dir=data_dir, examples=splits)
    if builder.is_prepared():
        raise FileExistsError(f"{builder.data_dir} already holds a {builder.name} data set")
    tfds.display_progress_bar(False)  # TFDS's per-split bars; callers report their own progress
    try:
        builder.download_and_prepare(
            download_dir=os.path.join(data_dir, "downloads"),
            download_config=tfds.download.DownloadConfig(verify_ssl=False),
        )
    finally:
        tfds.display_progress_bar(True)
    return BUILDERS[kind](data_dir=data_dir)


def empty_prompt_path(builder: tfds.core.DatasetBuilder) -> str:
    """Where a latent data set keeps the empty-prompt embedding [n, d] (float32 .npy)."""
    return os.path.join(builder.data_dir, "empty_prompt.npy")


def negative_prompt_paths(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
    """Where a latent data set keeps the negative prompt's embedding [n, d] (float32 .npy) and its text (.txt)."""
    return os.path.join(builder.data_dir, "negative_prompt.npy"), os.path.join(builder.data_dir, "negative_prompt.txt")


def record_name(builder: tfds.core.DatasetBuilder, split: str, index: int) -> str:
    """A record's name for people: data set, split, index, and the shard file and position holding it."""
    info = builder.info.splits[split]
    offset = 0
    for path, length in zip(info.filepaths, info.shard_lengths):
        if index < offset + length:
            return f"{builder.name}/{split}[{index}] ({_shard_label(os.fspath(path))} record {index - offset})"
        offset += length
    return f"{builder.name}/{split}[{index}]"


def _shard_label(path: str) -> str:
    """A shard's file name, after its part folder when it is one of a data set's parts
    (`part-NNNNN/<name>/<version>/<file>`)."""
    folders = os.path.normpath(path).split(os.sep)
    return "/".join(folders[-4::3]) if len(folders) >= 4 and PART.fullmatch(folders[-4]) else folders[-1]


# ----------------------------------------------------------------------------------------------------------------
# Real data: the authors' manifest layout.


def read_video_frames(path: str, num_frames: int) -> list:
    """The first `num_frames` frames of a video file as RGB PIL images (PyAV)."""
    try:
        import av
    except ImportError as e:
        raise ImportError(f"reading {path} needs PyAV: pip install av") from e
    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_image().convert("RGB"))
            if len(frames) == num_frames:
                break
    if len(frames) < num_frames:
        raise ValueError(f"{path}: has {len(frames)} frames, {num_frames} are needed")
    return frames


def captions_from_prompt(prompt_json: str, where: str) -> tuple[str, str]:
    """(static, dynamic) captions from the authors' prompt JSON, whose `en_long` is [dynamic, static] (`cn_long`,
    then the short forms, stand in where it is missing)."""
    prompts = json.loads(prompt_json)
    for key in ("en_long", "cn_long", "en_short", "cn_short"):
        value = prompts.get(key)
        if isinstance(value, (list, tuple)) and len(value) >= 2:
            return str(value[1]), str(value[0])
    raise ValueError(f"{where}: the prompt JSON has no [dynamic, static] caption pair under en_long/cn_long")


def examples_from_manifest(
    csv_path: str, height: int, width: int, num_frames: int, on_error: Callable[[str, Exception], None] | None = None
) -> Iterator[dict]:
    """Triplet examples from an authors'-layout CSV (see the module docstring), resized to height x width.
    A row that fails is passed to `on_error(row name, exception)` and skipped, or raises if none is given."""
    from PIL import Image

    from fc_jax.images import cover_crop, fit_pad

    base = os.path.dirname(os.path.abspath(csv_path))
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for number, row in enumerate(rows):
        where = f"{csv_path} row {number + 2}"
        try:
            video_path = row["video"] if os.path.isabs(row["video"]) else os.path.join(base, row["video"])
            stem = os.path.splitext(video_path)[0]
            static, dynamic = captions_from_prompt(row["prompt"], where)
            frames = [np.asarray(cover_crop(im, height, width, "training"))
                      for im in read_video_frames(video_path, num_frames)]
            reference = np.asarray(cover_crop(Image.open(stem + "_src.png").convert("RGB"), height, width, "training"))
            garment = np.asarray(fit_pad(Image.open(stem + "_cloth.png").convert("RGB"), height, width, "training"))
        except (OSError, ValueError, KeyError) as e:
            if on_error is None:
                raise ValueError(f"{where}: {e}") from e
            on_error(where, e)
            continue
        yield {
            "id": os.path.relpath(video_path, base),
            "video": np.stack(frames).astype(np.uint8),
            "reference": reference.astype(np.uint8),
            "garment": garment.astype(np.uint8),
            "static_caption": static,
            "dynamic_caption": dynamic,
            "garment_type": row.get("garment_type", "") or "",
            "source": json.dumps({"manifest": os.path.abspath(csv_path), "row": number, "video": video_path}),
        }
