"""The last step: every clip that passed all four stages becomes one `FashionTriplets` example (through
`fc_jax.data.triplets.write_dataset`): the clip frames, the reference (cover-resized and centre-cropped), the
garment (fit and padded on white), the long static and dynamic captions, the garment type, and the provenance
(source video, frame range, short captions, the retrieved garment, the stage verdicts) as JSON.

The data set grows in parts, `<work_dir>/dataset/part-NNNNN`, which `fc_jax.data.triplets.open_builder` reads as
one data set. Each run writes the clips that are in no part yet (raw videos added since the last run, errors
retried) as a new part, so every clip ends in exactly one part. A part is made safely at any kill point:

1. written under `.tmp-part-NNNNN` (not a part name: readers never see it), with `items.json` listing its clips;
2. renamed to `part-NNNNN` (atomic);
3. recorded in the manifest: one `write` row per clip naming its part, in one transaction.

A run killed during 1 leaves a temporary folder, deleted by the next run (its clips are written again). A run
killed between 2 and 3 leaves a part without manifest rows: the next run records it if it is complete (prepared,
with as many examples as `items.json` lists, all clips finished and in no other part) and deletes it otherwise
(its clips are written again).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from fc_jax.data.curate.manifest import Manifest
from fc_jax.data.triplets import FashionTriplets, part_dirs, write_dataset
from fc_jax.images import cover_crop, fit_pad
from fc_jax.video import read_video

log = logging.getLogger(__name__)
ITEMS = "items.json"  # the clip ids of a part, beside its data set
TMP = ".tmp-"  # prefix of a part being written


def examples(manifest: Manifest, items: list[str], geometry):
    """The examples of `items` (clips whose `tryon` stage is done), in order."""
    captions = {i: out for i, _, out in manifest.done("caption")}
    tryoff = {i: out for i, _, out in manifest.done("tryoff")}
    filtered = {i: out for i, _, out in manifest.done("filter")}
    tryon = {i: (info, out) for i, info, out in manifest.done("tryon")}
    for item in items:
        info, out = tryon[item]
        frames = read_video(filtered[item]["clip"]["video"]).frames
        if frames.shape[1:3] != (geometry.height, geometry.width) or len(frames) < geometry.num_frames:
            raise ValueError(f"{item}: its clip is {frames.shape}, the data set wants {geometry.num_frames} frames "
                             f"of {geometry.height}x{geometry.width}; was the geometry changed after stage 1?")
        with Image.open(out["reference"]) as im:
            reference = np.asarray(cover_crop(im.convert("RGB"), geometry.height, geometry.width, "training"))
        with Image.open(tryoff[item]["garment"]) as im:
            garment = np.asarray(fit_pad(im.convert("RGB"), geometry.height, geometry.width, "training"))
        cap = captions[item]
        yield {
            "id": item,
            "video": frames[: geometry.num_frames].astype(np.uint8),
            "reference": reference.astype(np.uint8),
            "garment": garment.astype(np.uint8),
            "static_caption": cap["static_long"],
            "dynamic_caption": cap["dynamic_long"],
            "garment_type": tryoff[item]["verdict"]["garment_type"],
            "source": json.dumps({"video": info["video"], "frames": info["frames"], "fps": info["fps"],
                                  "captions": cap, "tryoff": tryoff[item]["verdict"],
                                  "tryon": {"garment_from": out["garment_from"], "verdict": out["verdict"]}}),
        }


def part_items(path: str, split: str, finished: set[str], written: set[str]) -> list[str]:
    """The clip ids of the part at `path`; ValueError saying why if it is not complete, or holds clips that are
    not `finished` or are `written` in another part."""
    try:
        with open(os.path.join(path, ITEMS)) as f:
            items = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"no readable {ITEMS} ({e})") from e
    builder = FashionTriplets(data_dir=path)
    if not builder.is_prepared() or split not in builder.info.splits:
        raise ValueError(f"no prepared {builder.name} data set with a {split!r} split")
    found = builder.info.splits[split].num_examples
    if found != len(items):
        raise ValueError(f"{ITEMS} lists {len(items)} clips, the data set holds {found} examples")
    if not set(items) <= finished or set(items) & written:
        raise ValueError("its clips are not all finished, or some are already in another part")
    return items


def recover(manifest: Manifest, dataset_dir: str, split: str) -> None:
    """Clean up after a run killed while writing: delete temporary parts; record a complete part that the
    manifest does not know, or delete it if it is not complete."""
    for name in sorted(os.listdir(dataset_dir)):
        if name.startswith(TMP):
            log.warning("deleting %s, a part left unfinished by a killed run", name)
            shutil.rmtree(os.path.join(dataset_dir, name))
    finished = {i for i, _, _ in manifest.done("tryon")}
    for path in part_dirs(dataset_dir):
        name = os.path.basename(path)
        written = {i: out["part"] for i, _, out in manifest.done("write")}
        if name in written.values():
            continue
        try:
            items = part_items(path, split, finished, set(written))
        except ValueError as e:
            log.warning("deleting %s, a part the manifest does not record: %s", name, e)
            shutil.rmtree(path)
            continue
        log.info("recording %s (%d clips), written by a run killed before it recorded it", name, len(items))
        manifest.finish_all("write", [(i, "done", {"part": name}) for i in items])


def publish(tmp: str, path: str) -> None:
    """Move a finished part into place (atomic on one file system)."""
    os.rename(tmp, path)


def write_new_part(manifest: Manifest, dataset_dir: str, geometry, split: str) -> dict:
    """Write the finished clips that are in no part yet as a new part; returns what was written and the
    parts there are."""
    os.makedirs(dataset_dir, exist_ok=True)
    if FashionTriplets(data_dir=dataset_dir).is_prepared():
        raise FileExistsError(f"{dataset_dir} holds a data set written as one piece (by an earlier version); "
                              f"move it away: this stage writes part-NNNNN folders there")
    recover(manifest, dataset_dir, split)
    todo = [item for item, _ in manifest.todo("clip", "write", "tryon")]
    parts = [os.path.basename(p) for p in part_dirs(dataset_dir)]
    if not todo:
        if not parts:
            raise ValueError("no clip passed all four stages: there is nothing to write (see summary.json)")
        log.info("no new clips: the data set under %s stays as it is (%s)", dataset_dir, ", ".join(parts))
        return {"data_dir": dataset_dir, "parts": parts, "new_part": None, "new_examples": 0}
    used = parts + [out["part"] for *_, out in manifest.done("write")]  # a name is never given twice
    name = f"part-{max((int(p.split('-')[1]) + 1 for p in used), default=0):05d}"
    tmp, path = os.path.join(dataset_dir, TMP + name), os.path.join(dataset_dir, name)
    write_dataset("triplets", tmp, {split: examples(manifest, todo, geometry)})
    with open(os.path.join(tmp, ITEMS), "w") as f:
        json.dump(todo, f)
    publish(tmp, path)
    manifest.finish_all("write", [(item, "done", {"part": name}) for item in todo])
    return {"data_dir": dataset_dir, "parts": parts + [name], "new_part": name, "new_examples": len(todo)}
