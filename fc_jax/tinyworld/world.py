"""The tiny world's fixed vocabulary: named colours, attributes, motions, geometry constants.

Every colour a rendered pixel can take is listed here, and the classes are chosen to be separable: any two colours
of the *figure palette* (skin tones, hair colours, garment colours) are at least 64 apart in RGB (0..255), and every
background colour — wall colours, every point of a gradient between two wall colours, object colours — is at least
64 away from every figure colour (`tests/test_tinyworld.py` checks both). Garment colours exclude white and
near-white, so a garment laid flat on white can be segmented exactly.
"""

from __future__ import annotations

import itertools

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Colours (RGB, 0..255).

GARMENT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 40),
    "orange": (245, 140, 25),
    "yellow": (250, 225, 20),
    "green": (40, 160, 60),
    "teal": (0, 140, 150),
    "blue": (40, 70, 210),
    "purple": (125, 45, 170),
    "pink": (240, 100, 180),
    "navy": (25, 30, 95),
}
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "light": (240, 200, 170),
    "medium": (200, 145, 105),
    "dark": (150, 100, 72),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (40, 32, 30),
    "brown": (105, 55, 20),
    "blond": (230, 200, 90),
}
WALL_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (170, 170, 175),
    "sky": (165, 200, 235),
    "mint": (170, 220, 195),
    "lavender": (200, 185, 230),
    "slate": (105, 120, 140),
}
WALL_WORDS = {"grey": "light grey", "sky": "sky blue", "mint": "mint green", "lavender": "lavender", "slate": "slate"}
# Objects in the background (behind the person); each has two colour options so one differs from the wall.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "box_light": (150, 135, 150),
    "box_dark": (95, 105, 130),
    "leaf": (75, 115, 95),
    "pot_light": (130, 110, 140),
    "pot_dark": (95, 80, 110),
}
WHITE = (255, 255, 255)

# The figure palette, in a fixed order: index k of `FIGURE_RGB` is entry k of `FIGURE_NAMES` / `FIGURE_KINDS`.
FIGURE_NAMES: tuple[str, ...] = tuple(
    [f"skin:{n}" for n in SKIN_TONES] + [f"hair:{n}" for n in HAIR_COLOURS] + [f"garment:{n}" for n in GARMENT_COLOURS]
)
FIGURE_RGB = np.array(list(SKIN_TONES.values()) + list(HAIR_COLOURS.values()) + list(GARMENT_COLOURS.values()),
                      np.float32)
FIGURE_KINDS = np.array([n.split(":")[0] for n in FIGURE_NAMES])
SKIN_INDEX = {n: i for i, n in enumerate(SKIN_TONES)}
HAIR_INDEX = {n: len(SKIN_TONES) + i for i, n in enumerate(HAIR_COLOURS)}
GARMENT_INDEX = {n: len(SKIN_TONES) + len(HAIR_COLOURS) + i for i, n in enumerate(GARMENT_COLOURS)}
IS_SKIN = FIGURE_KINDS == "skin"
IS_HAIR = FIGURE_KINDS == "hair"
IS_GARMENT = FIGURE_KINDS == "garment"


def gradient_segments() -> np.ndarray:
    """[S, 2, 3] float32: every straight segment of colour a vertical wall gradient can take (all wall pairs)."""
    pairs = list(itertools.combinations(WALL_COLOURS.values(), 2))
    return np.array(pairs, np.float32)


def vq_palette() -> tuple[np.ndarray, np.ndarray]:
    """The colours a clean tiny-world image is made of, for the VQ purity score: (points [P, 3], segments
    [S, 2, 3]). Points: the figure palette, white (garment images) and object colours; segments: every wall
    gradient (their end points are the plain wall colours)."""
    points = np.concatenate([FIGURE_RGB, np.array([WHITE], np.float32),
                             np.array(list(OBJECT_COLOURS.values()), np.float32)])
    return points, gradient_segments()


# ---------------------------------------------------------------------------------------------------------------
# Attributes.

HAIR_STYLES = ("short", "long", "bun")
HEIGHTS = {"short": 0.60, "medium": 0.68, "tall": 0.76}  # head top to feet, fraction of the frame height
HEIGHT_WORDS = {"short": "short", "medium": "medium-height", "tall": "tall"}
BUILDS = {"slim": 0.85, "average": 1.0, "broad": 1.18}  # width multiplier
BUILD_WORDS = {"slim": "slim", "average": "average-build", "broad": "broad"}

GARMENT_TYPES = ("upper", "lower", "dress")  # the curation pipeline's garment_type values
GARMENT_WORDS = {"upper": "shirt", "lower": "trousers", "dress": "dress"}
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots")
PATTERN_WORDS = {"hstripes": "horizontal stripes", "vstripes": "vertical stripes", "checks": "checks", "dots": "dots"}
PERIODS = {"small": 8, "large": 12}  # full repeat of the pattern on the body, pixels at a 160 px frame height
PERIOD_WORDS = {"stripes": {"small": "thin", "large": "wide"}, "other": {"small": "small", "large": "large"}}

MOTIONS = ("walk_left", "walk_right", "arm_swing", "turn", "jump", "stand")
SPEEDS = ("slow", "fast")
# Walking speed, pixels per frame at a 128 px frame width (scaled with the width; see `walk_speed_px`).
WALK_SPEED = {"slow": 0.45, "fast": 1.0}
STEP_PERIOD = {"slow": 24, "fast": 14}  # frames per walk cycle
ARM_SWING_PERIOD = 20  # frames
JUMP_PERIOD = 15  # frames per hop
JUMP_HEIGHT = 0.08  # fraction of the frame height
GROUND = 0.95  # feet line, fraction of the frame height
FPS = 24

BACKGROUND_KINDS = ("plain", "gradient")
OBJECT_KINDS = ("box", "plant")

# The held-out split: colour-pattern pairs no training garment has, and (hair style, target garment type, motion)
# combinations no training triplet has (each attribute on its own is seen in training).
HELD_OUT_PAIRS = frozenset({("green", "checks"), ("purple", "dots"), ("orange", "vstripes"), ("teal", "hstripes")})
HELD_OUT_COMBOS = frozenset({("bun", "dress", "jump"), ("long", "lower", "turn"), ("short", "upper", "arm_swing"),
                             ("long", "dress", "walk_left")})


def scaled_period(period: str, height: int) -> int:
    """The pattern repeat on the body in pixels for a frame `height` (even, at least 4)."""
    return max(4, 2 * int(round(PERIODS[period] * height / 160 / 2)))


def walk_speed_px(speed: str, width: int, num_frames: int, height: int | None = None) -> float:
    """Horizontal speed of a walk in pixels per frame. Both speeds are scaled down together when a fast walk of
    the tallest person would not fit in the frame over `num_frames` (so slow/fast keep their ratio)."""
    base = {k: v * width / 128 for k, v in WALK_SPEED.items()}
    height = int(round(width * 160 / 128)) if height is None else height
    tallest = max(HEIGHTS.values()) * height
    room = max(width - 2 * REACH["walk_fast"] * tallest - 4, 0.1 * width)  # the centre travels at most this far
    shrink = min(1.0, room / (base["fast"] * max(num_frames - 1, 1)))
    return base[speed] * shrink


# How far a limb reaches from the figure's centre line (fraction of the figure height), per motion (broad
# build); the start position keeps the whole figure inside the frame with these.
REACH = {"walk_slow": 0.30, "walk_fast": 0.32, "arm_swing": 0.50, "jump": 0.46, "turn": 0.23, "stand": 0.23}


def reach_px(motion_kind: str, speed: str, person_height: str, build: str, frame_height: int) -> float:
    key = f"walk_{speed}" if motion_kind.startswith("walk") else motion_kind
    b = BUILDS[build]
    arms_out = 0.118 * (b - 1.18)  # REACH is for the broad build; narrower shoulders reach less
    return (REACH[key] + (arms_out if key in ("arm_swing", "jump", "turn", "stand") else 0.0)) \
        * HEIGHTS[person_height] * frame_height
