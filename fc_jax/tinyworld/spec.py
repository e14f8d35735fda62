"""What a tiny-world sample is: a `Spec` (person, garments, motion, background, geometry), drawn
deterministically from an integer seed; its captions; and which split it belongs to.

A spec is plain data (frozen dataclasses of strings and numbers) and round-trips through JSON
(`spec_to_dict` / `spec_from_dict`), so a data set record's `source` JSON holds everything needed to render its
ground truth again.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fc_jax.tinyworld import world as W


@dataclass(frozen=True)
class Person:
    skin: str  # world.SKIN_TONES
    hair_colour: str  # world.HAIR_COLOURS
    hair_style: str  # world.HAIR_STYLES
    height: str  # world.HEIGHTS
    build: str  # world.BUILDS


@dataclass(frozen=True)
class Garment:
    type: str  # world.GARMENT_TYPES: upper | lower | dress
    colour: str  # base colour, world.GARMENT_COLOURS
    pattern: str  # world.PATTERNS
    pattern_colour: str = ""  # second colour ("" for solid)
    period: str = "small"  # world.PERIODS (unused for solid)

    @property
    def colours(self) -> frozenset[str]:
        return frozenset({self.colour} | ({self.pattern_colour} if self.pattern != "solid" else set()))


@dataclass(frozen=True)
class BackgroundObject:
    kind: str  # world.OBJECT_KINDS
    x: float  # centre, fraction of the frame width
    size: float  # height, fraction of the frame height
    colour: str  # world.OBJECT_COLOURS key (box body or plant pot)


@dataclass(frozen=True)
class Background:
    kind: str  # plain | gradient
    top: str  # world.WALL_COLOURS
    bottom: str  # == top for plain
    objects: tuple[BackgroundObject, ...] = ()


@dataclass(frozen=True)
class Motion:
    kind: str  # world.MOTIONS
    speed: str = ""  # slow | fast for walks, "" otherwise


@dataclass(frozen=True)
class Spec:
    """One sample. The video shows `person` wearing `target` (+ `other`, the garment of the other slot, when the
    target is a top or trousers) doing `motion` in front of `background`; the reference shows the same person at
    the first frame wearing `reference_garment` (same type as `target`, different colour and/or pattern) in the
    target's place. With `switch_frame`, the target slot shows `switch_garment` from that frame on."""

    seed: int
    person: Person
    target: Garment
    reference_garment: Garment
    other: Garment | None
    motion: Motion
    background: Background
    x0: float  # figure centre at frame 0, pixels
    height: int = 160
    width: int = 128
    num_frames: int = 45
    switch_frame: int | None = None
    switch_garment: Garment | None = None

    @property
    def garments(self) -> tuple[Garment, ...]:
        """Every garment the spec shows anywhere (video, reference, switch)."""
        gs = [self.target, self.reference_garment, self.other, self.switch_garment]
        return tuple(g for g in gs if g is not None)


# ---------------------------------------------------------------------------------------------------------------
# JSON.


def spec_to_dict(spec: Spec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> Spec:
    def garment(g):
        return None if g is None else Garment(**g)

    bg = dict(d["background"])
    bg["objects"] = tuple(BackgroundObject(**o) for o in bg.get("objects", ()))
    return Spec(
        seed=int(d["seed"]), person=Person(**d["person"]), target=garment(d["target"]),
        reference_garment=garment(d["reference_garment"]), other=garment(d["other"]), motion=Motion(**d["motion"]),
        background=Background(**bg), x0=float(d["x0"]), height=int(d["height"]), width=int(d["width"]),
        num_frames=int(d["num_frames"]),
        switch_frame=None if d.get("switch_frame") is None else int(d["switch_frame"]),
        switch_garment=garment(d.get("switch_garment")),
    )


def spec_to_json(spec: Spec) -> str:
    return json.dumps(spec_to_dict(spec), sort_keys=True)


def spec_from_json(text: str) -> Spec:
    return spec_from_dict(json.loads(text))


# ---------------------------------------------------------------------------------------------------------------
# Sampling.


def _pick(rng: np.random.Generator, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


def sample_garment(rng: np.random.Generator, type: str, avoid_colours=frozenset()) -> Garment:
    """A random garment of `type` whose colours avoid `avoid_colours`."""
    colours = [c for c in W.GARMENT_COLOURS if c not in avoid_colours]
    colour = _pick(rng, colours)
    pattern = _pick(rng, W.PATTERNS)
    if pattern == "solid":
        return Garment(type, colour, "solid", "", "small")
    second = _pick(rng, [c for c in colours if c != colour])
    return Garment(type, colour, pattern, second, _pick(rng, W.PERIODS))


def mismatched(a: Garment, b: Garment) -> bool:
    """The paper's garment mismatch: a differs from b in base colour or in pattern kind."""
    return a.colour != b.colour or a.pattern != b.pattern


def sample_spec(seed: int, height: int = 160, width: int = 128, num_frames: int = 45) -> Spec:
    """The spec of `seed` (deterministic: numpy `default_rng(seed)`)."""
    if height < 64 or width < 64:
        raise ValueError(f"tiny world frames must be at least 64x64 pixels, got {height}x{width}")
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {num_frames}")
    rng = np.random.default_rng(seed)
    person = Person(_pick(rng, W.SKIN_TONES), _pick(rng, W.HAIR_COLOURS), _pick(rng, W.HAIR_STYLES),
                    _pick(rng, W.HEIGHTS), _pick(rng, W.BUILDS))
    kind = _pick(rng, W.GARMENT_TYPES)
    target = sample_garment(rng, kind)
    while True:  # the reference wears a different garment of the same type
        reference = sample_garment(rng, kind)
        if mismatched(reference, target):
            break
    other = None
    if kind != "dress":  # the other slot: colours disjoint from both garments of the target slot
        other = sample_garment(rng, "lower" if kind == "upper" else "upper",
                               avoid_colours=target.colours | reference.colours)
        if rng.random() < 0.6:
            other = Garment(other.type, other.colour, "solid", "", "small")
    motion_kind = _pick(rng, W.MOTIONS)
    motion = Motion(motion_kind, _pick(rng, W.SPEEDS) if motion_kind.startswith("walk") else "")
    background = sample_background(rng)
    # Start position: the whole figure stays inside the frame for the whole clip.
    margin = W.reach_px(motion.kind, motion.speed, person.height, person.build, height) + 2
    travel = W.walk_speed_px(motion.speed, width, num_frames, height) * (num_frames - 1) \
        if motion.kind.startswith("walk") else 0.0
    lo, hi = margin, width - margin - travel
    x0 = float(rng.uniform(lo, hi)) if hi > lo else (lo + hi) / 2
    if motion.kind == "walk_left":
        x0 = width - x0
    return Spec(seed, person, target, reference, other, motion, background, round(x0, 3), height, width, num_frames)


def sample_background(rng: np.random.Generator) -> Background:
    kind = _pick(rng, W.BACKGROUND_KINDS)
    top = _pick(rng, W.WALL_COLOURS)
    bottom = top if kind == "plain" else _pick(rng, [c for c in W.WALL_COLOURS if c != top])
    objects = []
    which = int(rng.integers(4))  # none, box, plant, both
    for obj_kind, present, side in (("box", which in (1, 3), 0), ("plant", which in (2, 3), 1)):
        if not present:
            continue
        x = float(rng.uniform(0.1, 0.35)) if side == 0 else float(rng.uniform(0.65, 0.9))
        if which != 3 and rng.random() < 0.5:
            x = 1.0 - x
        size = float(rng.uniform(0.18, 0.3))
        stem = "box" if obj_kind == "box" else "pot"
        options = [f"{stem}_light", f"{stem}_dark"]
        walls = [np.array(W.WALL_COLOURS[top], float), np.array(W.WALL_COLOURS[bottom], float)]
        # the option farther from the wall colours
        colour = max(options, key=lambda o: min(np.linalg.norm(np.array(W.OBJECT_COLOURS[o]) - w) for w in walls))
        objects.append(BackgroundObject(obj_kind, round(x, 4), round(size, 4), colour))
    return Background(kind, top, bottom, tuple(objects))


def with_switch(spec: Spec, switch_frame: int, garment: Garment | None = None, seed: int | None = None) -> Spec:
    """`spec` with the target slot switching at `switch_frame` to `garment` (by default a random garment of the
    same type, drawn from `seed` (default: spec.seed), whose colours share none with the target's or the other
    slot's, so old and new garments are told apart by colour alone)."""
    if not 0 < switch_frame < spec.num_frames:
        raise ValueError(f"switch_frame must be in 1..{spec.num_frames - 1}, got {switch_frame}")
    if garment is None:
        rng = np.random.default_rng([spec.seed if seed is None else seed, 7])
        avoid = spec.target.colours | (spec.other.colours if spec.other else frozenset())
        garment = sample_garment(rng, spec.target.type, avoid_colours=avoid)
    if garment.type != spec.target.type:
        raise ValueError(f"a switch keeps the garment type: target is {spec.target.type}, got {garment.type}")
    return dataclasses.replace(spec, switch_frame=int(switch_frame), switch_garment=garment)


# ---------------------------------------------------------------------------------------------------------------
# Captions.


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def garment_phrase(g: Garment) -> str:
    """e.g. "a red shirt with thin white horizontal stripes", "plain navy trousers"."""
    noun = W.GARMENT_WORDS[g.type]
    if g.pattern == "solid":
        core = f"plain {g.colour} {noun}"
    else:
        size = W.PERIOD_WORDS["stripes" if g.pattern.endswith("stripes") else "other"][g.period]
        core = f"{g.colour} {noun} with {size} {g.pattern_colour} {W.PATTERN_WORDS[g.pattern]}"
    return core if g.type == "lower" else _article(core)


def person_phrase(p: Person) -> str:
    hair = f"{p.hair_colour} hair in a bun" if p.hair_style == "bun" else f"{p.hair_style} {p.hair_colour} hair"
    return f"{_article(W.HEIGHT_WORDS[p.height])} {W.BUILD_WORDS[p.build]} person with {hair} and {p.skin} skin"


def background_phrase(b: Background) -> str:
    if b.kind == "plain":
        wall = f"a plain {W.WALL_WORDS[b.top]} wall"
    else:
        wall = f"a wall fading from {W.WALL_WORDS[b.top]} to {W.WALL_WORDS[b.bottom]}"
    things = [_article(o.kind) for o in b.objects]
    return wall + (" beside " + " and ".join(things) if things else "")


def outfit_phrase(target: Garment, other: Garment | None) -> str:
    if target.type == "dress":
        return garment_phrase(target)
    top, bottom = (target, other) if target.type == "upper" else (other, target)
    return f"{garment_phrase(top)} and {garment_phrase(bottom)}"


def static_caption(spec: Spec) -> str:
    """Appearance: the person and the outfit of the video (the target garment), and the scene."""
    return (f"{person_phrase(spec.person)}, wearing {outfit_phrase(spec.target, spec.other)}, "
            f"in front of {background_phrase(spec.background)}")


_DYNAMIC = {
    ("walk_left", "slow"): "the person walks to the left slowly",
    ("walk_left", "fast"): "the person walks to the left quickly",
    ("walk_right", "slow"): "the person walks to the right slowly",
    ("walk_right", "fast"): "the person walks to the right quickly",
    ("arm_swing", ""): "the person stands in place and swings both arms up and down",
    ("turn", ""): "the person turns around once in place",
    ("jump", ""): "the person jumps up and down in place",
    ("stand", ""): "the person stands still",
}


def dynamic_caption(spec_or_motion: Spec | Motion) -> str:
    """Motion, in a fixed vocabulary (`parse_dynamic_caption` inverts it)."""
    m = spec_or_motion.motion if isinstance(spec_or_motion, Spec) else spec_or_motion
    return _DYNAMIC[(m.kind, m.speed)]


def full_caption(spec: Spec) -> str:
    """The dynamic caption, a space, the static one: the order the models train on (`fc_jax.data.preencode`'s
    full caption, the authors' en_long[0] + " " + en_long[1])."""
    return f"{dynamic_caption(spec)} {static_caption(spec)}"


def parse_dynamic_caption(text: str) -> Motion:
    """The motion a dynamic caption says (lenient about wording: keywords walk/left/right/slow/quick/fast,
    swing, turn, jump, still). ValueError if it names none."""
    t = text.lower()
    if re.search(r"\bwalk", t):
        direction = "left" if "left" in t else "right" if "right" in t else None
        speed = "fast" if re.search(r"quick|fast|brisk", t) else "slow" if re.search(r"slow", t) else None
        if direction and speed:
            return Motion(f"walk_{direction}", speed)
    elif "swing" in t:
        return Motion("arm_swing")
    elif "turn" in t:
        return Motion("turn")
    elif "jump" in t:
        return Motion("jump")
    elif "still" in t:
        return Motion("stand")
    raise ValueError(f"no tiny-world motion in the caption {text!r}")


# ---------------------------------------------------------------------------------------------------------------
# Splits.

SPLITS = ("train", "eval", "test", "heldout")


def is_held_out(spec: Spec) -> bool:
    """True if the spec shows a held-out (colour, pattern) pair on any garment, or a held-out
    (hair style, target garment type, motion) combination."""
    if any((g.colour, g.pattern) in W.HELD_OUT_PAIRS for g in spec.garments):
        return True
    return (spec.person.hair_style, spec.target.type, spec.motion.kind) in W.HELD_OUT_COMBOS


def seed_split(seed: int) -> str:
    """The split a seed goes to unless its spec is held out: seed mod 10 in 0..7 train, 8 eval, 9 test."""
    r = seed % 10
    return "train" if r < 8 else "eval" if r == 8 else "test"


def split_of(spec: Spec) -> str:
    """train | eval | test | heldout. Seeds are disjoint across splits by construction (one seed, one spec,
    one split); the held-out split takes every spec with a held-out pair or combination, whatever its seed."""
    return "heldout" if is_held_out(spec) else seed_split(spec.seed)


def split_specs(split: str, count: int, *, start_seed: int = 0, height: int = 160, width: int = 128,
                num_frames: int = 45) -> Iterator[Spec]:
    """The first `count` specs of `split`, scanning seeds upward from `start_seed`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the tiny world has {SPLITS}")
    seed, found = start_seed, 0
    while found < count:
        if split != "heldout" and seed_split(seed) != split:  # cheap skip before sampling
            seed += 1
            continue
        spec = sample_spec(seed, height, width, num_frames)
        if split_of(spec) == split:
            found += 1
            yield spec
        seed += 1
