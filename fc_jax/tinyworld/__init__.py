"""The tiny world: a deterministic numpy renderer of people in garments, triplets in the curation format, and
exact metrics on generated videos.

- `world`: the fixed vocabulary (named colours chosen so every pixel class is separable, attributes, motions,
  geometry constants, the held-out pairs and combinations).
- `spec`: `Spec` (person, target / reference / other garment, motion, background, start position, geometry, an
  optional garment switch), `sample_spec(seed)`, captions, `split_of(spec)` / `split_specs(split, n)`.
- `render`: `render_sample(spec) -> Sample` (video, reference, flat garment image, part maps = masks, pose per
  frame), `render_background`, `render_garment_image`.
- `dataset`: `write_tinyworld(data_dir, counts)` writes a `FashionTriplets` data set through
  `fc_jax.data.triplets.write_dataset`; `ground_truth(example)` renders a record's ground truth again.
- `metrics`: ID, motion alignment, Amp, Smoo, VQ (numpy and differentiable JAX), HGC / LGC garment consistency,
  NTP, switch latency / leakage / continuity / identity; `evaluate(video, spec)` runs them all.

`python -m fc_jax.tinyworld --help` writes a data set or saves PNG strips to look at.
"""

from fc_jax.tinyworld.dataset import examples, ground_truth, spec_of, to_example, write_tinyworld
from fc_jax.tinyworld.render import PART_NAMES, Sample, render_background, render_garment_image, render_sample
from fc_jax.tinyworld.spec import (
    SPLITS,
    Background,
    BackgroundObject,
    Garment,
    Motion,
    Person,
    Spec,
    dynamic_caption,
    is_held_out,
    mismatched,
    parse_dynamic_caption,
    sample_spec,
    spec_from_json,
    spec_to_json,
    split_of,
    split_specs,
    static_caption,
    with_switch,
)

__all__ = [
    "PART_NAMES", "SPLITS", "Background", "BackgroundObject", "Garment", "Motion", "Person", "Sample", "Spec",
    "dynamic_caption", "examples", "ground_truth", "is_held_out", "mismatched", "parse_dynamic_caption",
    "render_background", "render_garment_image", "render_sample", "sample_spec", "spec_from_json", "spec_of",
    "spec_to_json", "split_of", "split_specs", "static_caption", "to_example", "with_switch", "write_tinyworld",
]
