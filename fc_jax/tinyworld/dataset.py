"""Tiny-world triplets as a `FashionTriplets` data set, in exactly the format curation writes
(`fc_jax.data.curate.write`): `video` uint8 [F, H, W, 3], `reference` and `garment` uint8 [H, W, 3] (the garment
fit and centred on white), `static_caption`, `dynamic_caption`, `garment_type` (upper | lower | dress, curation's
vocabulary), `id` and `source` JSON.

`source` holds the generator, the split, the whole spec and the per-frame pose (a few kB), so a record's ground
truth can always be rendered again: `ground_truth(example_or_source)` returns the `Sample` (pixels, part maps,
pose). With `masks_dir`, `write_tinyworld` also saves each record's part maps as `<masks_dir>/<split>/<id>.npz`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Iterable, Iterator, Mapping

import numpy as np

from fc_jax.tinyworld.render import PART_NAMES, Sample, render_sample
from fc_jax.tinyworld.spec import SPLITS, Spec, spec_from_dict, spec_to_dict, split_of, split_specs

log = logging.getLogger(__name__)
GENERATOR = "fc_jax.tinyworld"
VERSION = 1


def example_id(spec: Spec) -> str:
    return f"tinyworld-{spec.seed:08d}"


def to_example(sample: Sample) -> dict:
    """A `FashionTriplets` example of a rendered sample."""
    spec = sample.spec
    source = {
        "generator": GENERATOR, "version": VERSION, "split": split_of(spec), "seed": spec.seed,
        "spec": spec_to_dict(spec), "flat_scale": sample.flat_scale, "fps": 24,
        "pose": {k: [round(float(x), 3) for x in v] for k, v in sample.pose.items()},
    }
    return {
        "id": example_id(spec),
        "video": sample.video,
        "reference": sample.reference,
        "garment": sample.garment,
        "static_caption": sample.static_caption,
        "dynamic_caption": sample.dynamic_caption,
        "garment_type": spec.target.type,
        "source": json.dumps(source, sort_keys=True),
    }


def examples(specs: Iterable[Spec], masks_dir: str | None = None, split: str | None = None,
             progress_every: int = 100) -> Iterator[dict]:
    """Render and convert each spec; with `masks_dir`, save its part maps beside (see module docstring)."""
    start = time.time()
    for i, spec in enumerate(specs):
        sample = render_sample(spec)
        example = to_example(sample)
        if masks_dir is not None:
            folder = os.path.join(masks_dir, split or split_of(spec))
            os.makedirs(folder, exist_ok=True)
            np.savez_compressed(os.path.join(folder, example["id"] + ".npz"), parts=sample.parts,
                                reference_parts=sample.reference_parts, garment_mask=sample.garment_mask,
                                part_names=np.array(PART_NAMES), **{f"pose_{k}": v for k, v in sample.pose.items()})
        if progress_every and (i + 1) % progress_every == 0:
            rate = (i + 1) / max(time.time() - start, 1e-9)
            log.info("tiny world %s: %d examples rendered (%.1f/s)", split or "", i + 1, rate)
        yield example


def write_tinyworld(data_dir: str, counts: Mapping[str, int], *, height: int = 160, width: int = 128,
                    num_frames: int = 45, start_seed: int = 0, masks_dir: str | None = None):
    """Write a `FashionTriplets` data set of the tiny world under `data_dir` (through
    `fc_jax.data.triplets.write_dataset`) with `counts[split]` examples per split (splits: train, eval, test,
    heldout; see `fc_jax.tinyworld.spec.split_of`). Returns the builder."""
    from fc_jax.data.triplets import write_dataset

    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; the tiny world has {SPLITS}")
    splits = {
        split: examples(split_specs(split, n, start_seed=start_seed, height=height, width=width,
                                    num_frames=num_frames), masks_dir=masks_dir, split=split)
        for split, n in counts.items() if n > 0
    }
    return write_dataset("triplets", data_dir, splits)


def spec_of(example_or_source) -> Spec:
    """The spec of a tiny-world record (an example dict, or its `source` JSON text)."""
    source = example_or_source["source"] if isinstance(example_or_source, Mapping) else example_or_source
    if isinstance(source, bytes):
        source = source.decode()
    data = json.loads(source)
    if data.get("generator") != GENERATOR:
        raise ValueError(f"not a tiny-world record: its source names generator {data.get('generator')!r}")
    return spec_from_dict(data["spec"])


def ground_truth(example_or_source) -> Sample:
    """The ground truth of a tiny-world record, rendered again from its spec."""
    return render_sample(spec_of(example_or_source))
