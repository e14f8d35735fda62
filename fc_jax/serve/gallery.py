"""The studio's built-in people and garments, rendered by the tiny world at the served model's video size, and
the measure of which garment colour a generated frame shows.

People: held-out tiny-world specs (combinations never seen in training) in a top, one per motion kind while they
last (`PEOPLE`); each entry's image is the spec's reference frame and its caption the spec's full caption.
Garments: solid tops laid flat on white, one per colour in `GARMENT_COLOURS` (clearly different colours of the
world's palette, `fc_jax.tinyworld.world`). `garment_colour(frames, person)` classifies frames to the world's
palette (`fc_jax.tinyworld.metrics`) and names the garment colour that covers most of the top's rows.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from fc_jax.tinyworld import metrics
from fc_jax.tinyworld import world as W
from fc_jax.tinyworld.render import render_background, render_garment_image, render_sample
from fc_jax.tinyworld.spec import Garment, Spec, full_caption, split_specs

GARMENT_COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
PEOPLE = 4
MOTION_ORDER = ("arm_swing", "stand", "turn", "jump", "walk_left", "walk_right")  # in-place motions first
SEARCHED = 400  # held-out specs looked through for the people


@dataclasses.dataclass(frozen=True)
class Person:
    id: str
    name: str
    spec: Spec
    image: np.ndarray  # uint8 [H, W, 3]: the spec's reference frame

    @property
    def caption(self) -> str:
        return full_caption(self.spec)

    def caption_with(self, garment: Garment | None) -> str:
        """The person's caption with `garment` as the top (None: the spec's own)."""
        return self.caption if garment is None else full_caption(dataclasses.replace(self.spec, target=garment))


@dataclasses.dataclass(frozen=True)
class GarmentItem:
    id: str
    name: str
    colour: str
    garment: Garment
    image: np.ndarray  # uint8 [H, W, 3] on white


class Gallery:
    """The built-in people (`people`, ids p0..) and garments (`garments`, ids g0..) at height x width."""

    def __init__(self, height: int, width: int, people: int = PEOPLE, colours=GARMENT_COLOURS):
        self.height, self.width = height, width
        self.people = _people(height, width, people)
        self.garments = []
        for i, colour in enumerate(colours):
            g = Garment("upper", colour, "solid")
            self.garments.append(GarmentItem(f"g{i}", f"{colour} shirt", colour, g,
                                             render_garment_image(g, height, width)[0]))
        self._png: dict[str, bytes] = {}

    def person(self, id: str) -> Person | None:
        return next((p for p in self.people if p.id == id), None)

    def garment(self, id: str) -> GarmentItem | None:
        return next((g for g in self.garments if g.id == id), None)

    def png(self, id: str) -> bytes | None:
        """The PNG of a built-in person or garment (None for an unknown id)."""
        if id not in self._png:
            item = self.person(id) or self.garment(id)
            if item is None:
                return None
            self._png[id] = png_bytes(item.image)
        return self._png[id]

    def listing(self) -> dict:
        return {"people": [{"id": p.id, "name": p.name, "url": f"/gallery/{p.id}.png", "caption": p.caption}
                           for p in self.people],
                "garments": [{"id": g.id, "name": g.name, "colour": g.colour, "rgb": list(W.GARMENT_COLOURS[g.colour]),
                              "url": f"/gallery/{g.id}.png"} for g in self.garments]}


def _people(height: int, width: int, count: int) -> list[Person]:
    """Held-out specs in a top, one per motion kind in `MOTION_ORDER` order, then any, up to `count`."""
    found: dict[str, Spec] = {}
    extra: list[Spec] = []
    for spec in split_specs("heldout", SEARCHED, height=height, width=width, num_frames=9):
        if spec.target.type != "upper" or spec.switch_garment is not None:
            continue
        if spec.motion.kind not in found:
            found[spec.motion.kind] = spec
        else:
            extra.append(spec)
        if len(found) >= count and all(k in found for k in MOTION_ORDER[:count]):
            break
    chosen = ([found[k] for k in MOTION_ORDER if k in found] + extra)[:count]
    out = []
    for i, spec in enumerate(chosen):
        p = spec.person
        name = f"{p.hair_colour} {p.hair_style} hair, {p.skin} skin ({spec.motion.kind.replace('_', ' ')})"
        out.append(Person(f"p{i}", name, spec, render_sample(spec).reference))
    return out


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def garment_colour(frames, person: Person) -> tuple[str | None, float]:
    """(the garment colour name covering most garment-coloured pixels in the top's rows, its share of them) of
    uint8 frames [F, H, W, 3] (or one [H, W, 3]) made for `person`; (None, 0) when no frame shows a top."""
    frames = np.asarray(frames)
    frames = frames[None] if frames.ndim == 3 else frames
    labels = metrics.classify(frames, render_background(person.spec))
    region = metrics.garment_region(labels, person.spec, "upper")
    counts = np.bincount(labels[region].astype(np.int64), minlength=len(W.FIGURE_NAMES))
    if counts.sum() < metrics.MIN_REGION:
        return None, 0.0
    best = int(counts.argmax())
    return W.FIGURE_NAMES[best].split(":", 1)[1], float(counts[best] / counts.sum())
