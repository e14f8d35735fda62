"""The main job's built-in case on the tiny world: a held-out person, the garment they should wear, a second
garment switched to mid-video, the caption, and the tiny-world metrics of what the student streamed for it.

`demo_case(frames, switch_frame)` picks the first held-out spec (combinations never seen in training) whose
figure walks and whose target is a top (the most visible slot), with `switch_frame` and a garment of the same
type that shares no colour with the first (`spec.with_switch`): old and new garments are told apart by colour.
`score(video, case)` is `fc_jax.tinyworld.metrics.evaluate` of the streamed frames against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fc_jax.tinyworld import metrics
from fc_jax.tinyworld.render import Sample, render_sample
from fc_jax.tinyworld.spec import Spec, dynamic_caption, full_caption, split_specs, with_switch

SEARCHED = 256  # held-out specs looked through for the demo's kind of sample


@dataclasses.dataclass(frozen=True)
class DemoCase:
    """spec: with its switch; truth: its render (reference [H, W, 3], garment, switch_garment images, the video
    it should look like); caption: the full caption given to the student (dynamic + static, the order the
    models trained on, `fc_jax.data.preencode`)."""

    spec: Spec
    truth: Sample
    caption: str

    @property
    def reference(self) -> np.ndarray:
        return self.truth.reference

    @property
    def garment(self) -> np.ndarray:
        return self.truth.garment

    @property
    def switch_garment(self) -> np.ndarray:
        return self.truth.switch_garment


def demo_case(frames: int, switch_frame: int | None, height: int = 160, width: int = 128) -> DemoCase:
    """The built-in case for a `frames`-frame video at `height` x `width` switching at `switch_frame` (None: no
    switch). ValueError if no held-out spec among the first `SEARCHED` is a walking figure in a top."""
    for spec in split_specs("heldout", SEARCHED, height=height, width=width, num_frames=frames):
        if spec.motion.kind.startswith("walk") and spec.target.type == "upper":
            break
    else:
        raise ValueError(f"no walking figure in a top among the first {SEARCHED} held-out tiny-world specs")
    if switch_frame is not None:
        spec = with_switch(spec, switch_frame)
    return DemoCase(spec, render_sample(spec), full_caption(spec))


def score(video: np.ndarray, case: DemoCase) -> dict[str, float]:
    """The tiny-world metrics ("group/name" -> float) of the streamed `video` uint8 [F, H, W, 3] for `case`:
    identity, motion against the caption, VQ, non-target preservation, the first garment before the switch, the
    second after it and the switch's latency / leakage / continuity (`metrics.evaluate`)."""
    if video.shape[0] != case.spec.num_frames:
        raise ValueError(f"the case is {case.spec.num_frames} frames long; the video has {video.shape[0]}")
    return metrics.evaluate(video, case.spec, case.reference, case.garment, dynamic_caption(case.spec),
                            ground_truth=case.truth)
