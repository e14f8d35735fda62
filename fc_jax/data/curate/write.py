"""The last step: every clip that passed all four stages becomes one `FashionTriplets` example (through
`fc_jax.data.triplets.write_dataset`), written once under `<work_dir>/dataset`: the clip frames, the reference
(cover-resized and centre-cropped), the garment (fit and padded on white), the long static and dynamic captions,
the garment type, and the provenance (source video, frame range, short captions, the retrieved garment, the
stage verdicts) as JSON."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fc_jax.data.curate.manifest import Manifest
from fc_jax.data.triplets import cover_crop, fit_pad_white, write_dataset
from fc_jax.video import read_video


def examples(manifest: Manifest, geometry):
    captions = {i: out for i, _, out in manifest.done("caption")}
    tryoff = {i: out for i, _, out in manifest.done("tryoff")}
    filtered = {i: out for i, _, out in manifest.done("filter")}
    for item, info, out in manifest.done("tryon"):
        frames = read_video(filtered[item]["clip"]["video"]).frames
        if frames.shape[1:3] != (geometry.height, geometry.width) or len(frames) < geometry.num_frames:
            raise ValueError(f"{item}: its clip is {frames.shape}, the data set wants {geometry.num_frames} frames "
                             f"of {geometry.height}x{geometry.width}; was the geometry changed after stage 1?")
        with Image.open(out["reference"]) as im:
            reference = np.asarray(cover_crop(im.convert("RGB"), geometry.height, geometry.width))
        with Image.open(tryoff[item]["garment"]) as im:
            garment = np.asarray(fit_pad_white(im.convert("RGB"), geometry.height, geometry.width))
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


def write_triplets(manifest: Manifest, data_dir: str, geometry, split: str) -> int:
    """Write the data set; returns the number of examples."""
    count = len(manifest.done("tryon"))
    if count == 0:
        raise ValueError("no clip passed all four stages: there is nothing to write (see summary.json)")
    write_dataset("triplets", data_dir, {split: examples(manifest, geometry)})
    return count
