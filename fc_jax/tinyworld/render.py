"""The tiny world's renderer: a spec in, pixels and exact ground truth out (numpy, vectorised over frames).

A figure is a set of filled shapes (ellipses, capsules, convex quads) drawn back to front with hard edges at 1x:
every pixel belongs to exactly one part (background, skin, hair, upper garment, lower garment, dress), so the
part map *is* the mask and every pixel has exactly one palette colour (or the background's colour there).

Geometry, in units of the figure height `hf` (head top to feet) measured from the head top:
head centre 0.075 (radii 0.062 x 0.075), shoulders 0.175, top hem 0.54, hip joints 0.55, dress hem 0.80,
feet 1.0.
The figure's horizontal centre follows the motion; facing (0 = to the viewer, pi/2 = to the viewer's right,
pi = away) narrows the body (x0.62 in profile) and moves the hair to the back of the head.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from fc_jax.tinyworld import world as W
from fc_jax.tinyworld.spec import Garment, Person, Spec, dynamic_caption, static_caption

BG, SKIN, HAIR, UPPER, LOWER, DRESS = range(6)
PART_NAMES = ("background", "skin", "hair", "upper", "lower", "dress")
SLOT = {"upper": UPPER, "lower": LOWER, "dress": DRESS}

# Rows (fractions of hf below the head top) that only a garment slot covers, in every pose (used by the metrics
# to find a garment from pixels); SLOT_REACH: rows a slot's garment may reach (sleeves raised, legs straight).
SLOT_ROWS = {"upper": (0.18, 0.52), "lower": (0.555, 0.85), "dress": (0.18, 0.79)}
SLOT_REACH = {"upper": (0.12, 0.59), "lower": (0.5, 0.95), "dress": (0.12, 0.85)}


@dataclass(frozen=True)
class Body:
    """Pixel dimensions of a person in a frame of height `frame_height`."""

    hf: float  # head top to feet
    build: float
    head_rx: float
    head_ry: float

    @staticmethod
    def of(person: Person, frame_height: int) -> "Body":
        hf = W.HEIGHTS[person.height] * frame_height
        return Body(hf, W.BUILDS[person.build], 0.062 * hf, 0.075 * hf)

    def top_protrusion(self, hair_style: str) -> float:
        """How far the hair reaches above the head top (pixels): the bun, or the hair cap."""
        cap = 1.1 * self.head_ry + 0.012 * self.hf - 0.075 * self.hf  # cap ellipse top above the head top
        bun = self.head_ry + 0.042 * self.hf - 0.075 * self.hf
        return max(cap, bun) if hair_style == "bun" else cap


@dataclass
class Sample:
    """A rendered spec. Pixels are uint8 RGB; `parts` holds one of BG/SKIN/HAIR/UPPER/LOWER/DRESS per pixel."""

    spec: Spec
    video: np.ndarray  # [F, H, W, 3] the person wearing the target garment
    reference: np.ndarray  # [H, W, 3] frame 0 wearing the reference garment
    garment: np.ndarray  # [H, W, 3] the target garment laid flat on white
    parts: np.ndarray  # [F, H, W] uint8 part ids of the video
    reference_parts: np.ndarray  # [H, W]
    garment_mask: np.ndarray  # [H, W] bool: garment pixels of `garment`
    pose: dict  # name -> float32 [F]: cx, cy, top, facing (rad), arm_angle (deg), leg_angle (deg), jump (px)
    flat_scale: int  # the garment image shows the garment at this many pixels per body pixel
    static_caption: str
    dynamic_caption: str
    switch_garment: np.ndarray | None = None  # [H, W, 3] the garment switched to (spec.switch_garment), if any

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """bool [F, H, W] per class: garment (the target slot), other_garment, skin, hair, background."""
        return part_masks(self.parts, self.spec.target.type)

    @property
    def reference_masks(self) -> dict[str, np.ndarray]:
        return part_masks(self.reference_parts, self.spec.target.type)


def part_masks(parts: np.ndarray, target_type: str) -> dict[str, np.ndarray]:
    slot = SLOT[target_type]
    return {
        "garment": parts == slot,
        "other_garment": (parts >= UPPER) & (parts != slot),
        "skin": parts == SKIN,
        "hair": parts == HAIR,
        "background": parts == BG,
    }


# ---------------------------------------------------------------------------------------------------------------
# Motion: the pose of every frame.


def pose_track(spec: Spec) -> dict[str, np.ndarray]:
    """Per-frame pose arrays (float64 [F]): cx, jump (px up), facing (rad), arm angles arm0/arm1 (screen angle from
    straight down, rad; + turns the hand toward +x), elbow bend (rad), leg angles leg0/leg1 (rad)."""
    F, m = spec.num_frames, spec.motion
    t = np.arange(F, dtype=np.float64)
    deg = np.pi / 180
    zeros = np.zeros(F)
    cx = np.full(F, spec.x0)
    facing, jump, bend = zeros.copy(), zeros.copy(), zeros.copy()
    abd = np.full(F, 8 * deg)
    arm0, arm1 = -abd, abd
    leg0, leg1 = np.full(F, -3 * deg), np.full(F, 3 * deg)
    if m.kind.startswith("walk"):
        d = 1.0 if m.kind == "walk_right" else -1.0
        v = W.walk_speed_px(m.speed, spec.width, F, spec.height)
        cx = spec.x0 + d * v * t
        w = 2 * np.pi / W.STEP_PERIOD[m.speed]
        amp_leg, amp_arm = (24 * deg, 22 * deg) if m.speed == "slow" else (28 * deg, 30 * deg)
        leg0, leg1 = amp_leg * np.sin(w * t), -amp_leg * np.sin(w * t)
        arm0, arm1 = -amp_arm * np.sin(w * t), amp_arm * np.sin(w * t)
        facing = np.full(F, np.pi / 2 if d > 0 else 3 * np.pi / 2)
        bend = np.full(F, d * 18 * deg)
    elif m.kind == "arm_swing":
        abd = (10 + 75 * (1 - np.cos(2 * np.pi * t / W.ARM_SWING_PERIOD)) / 2) * deg
        arm0, arm1 = -abd, abd
    elif m.kind == "turn":
        facing = 2 * np.pi * t / max(F - 1, 1)
    elif m.kind == "jump":
        J = W.JUMP_HEIGHT * spec.height
        jump = J * np.abs(np.sin(np.pi * t / W.JUMP_PERIOD))
        abd = (12 + 45 * jump / J) * deg
        arm0, arm1 = -abd, abd
    elif m.kind != "stand":
        raise ValueError(f"unknown motion {m.kind!r}; the tiny world has {W.MOTIONS}")
    return dict(cx=cx, jump=jump, facing=facing, arm0=arm0, arm1=arm1, bend=bend, leg0=leg0, leg1=leg1)


# ---------------------------------------------------------------------------------------------------------------
# Shapes on a pixel grid. Coordinates are pixel centres; parameters broadcast against [F, 1, 1].


def _col(a) -> np.ndarray:
    return np.asarray(a, np.float32).reshape(-1, 1, 1)


def _ellipse(X, Y, cx, cy, rx, ry):
    return ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0


def _capsule(X, Y, x1, y1, x2, y2, r):
    dx, dy = x2 - x1, y2 - y1
    L2 = np.maximum(dx * dx + dy * dy, 1e-6)
    t = np.clip(((X - x1) * dx + (Y - y1) * dy) / L2, 0.0, 1.0)
    return (X - x1 - t * dx) ** 2 + (Y - y1 - t * dy) ** 2 <= r * r


def _quad(X, Y, pts):
    """Inside a convex polygon (vertices in order, either orientation)."""
    pos = neg = None
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        c = (x2 - x1) * (Y - y1) - (y2 - y1) * (X - x1)
        pos = (c >= 0) if pos is None else pos & (c >= 0)
        neg = (c <= 0) if neg is None else neg & (c <= 0)
    return pos | neg


class _Canvas:
    """Part ids [F, H, W] painted shape by shape; each shape is evaluated only inside its bounding box over all
    frames (the union of its per-frame boxes), which keeps rendering fast."""

    def __init__(self, F: int, H: int, Wd: int):
        self.parts = np.zeros((F, H, Wd), np.uint8)
        self.H, self.W = H, Wd

    def _window(self, xlo, xhi, ylo, yhi):
        x0, x1 = max(0, int(np.floor(np.min(xlo)))), min(self.W, int(np.ceil(np.max(xhi))) + 1)
        y0, y1 = max(0, int(np.floor(np.min(ylo)))), min(self.H, int(np.ceil(np.max(yhi))) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        X = (np.arange(x0, x1, dtype=np.float32) + 0.5).reshape(1, 1, -1)
        Y = (np.arange(y0, y1, dtype=np.float32) + 0.5).reshape(1, -1, 1)
        return slice(y0, y1), slice(x0, x1), X, Y

    def _paint(self, win, mask, value, cond, frames):
        sy, sx, X, Y = win
        if cond is not None:
            mask = mask & cond(X, Y)
        if frames is not None:
            mask = mask & frames
        view = self.parts[:, sy, sx]
        view[np.broadcast_to(mask, view.shape)] = value

    def ellipse(self, value, cx, cy, rx, ry, cond=None, frames=None):
        win = self._window(cx - rx, cx + rx, cy - ry, cy + ry)
        if win is not None:
            self._paint(win, _ellipse(win[2], win[3], cx, cy, rx, ry), value, cond, frames)

    def capsule(self, value, x1, y1, x2, y2, r, frames=None, cond=None):
        win = self._window(np.minimum(x1, x2) - r, np.maximum(x1, x2) + r, np.minimum(y1, y2) - r,
                           np.maximum(y1, y2) + r)
        if win is not None:
            self._paint(win, _capsule(win[2], win[3], x1, y1, x2, y2, r), value, cond, frames)

    def quad(self, value, pts, cond=None, frames=None):
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        win = self._window(functools.reduce(np.minimum, xs), functools.reduce(np.maximum, xs),
                           functools.reduce(np.minimum, ys), functools.reduce(np.maximum, ys))
        if win is not None:
            self._paint(win, _quad(win[2], win[3], pts), value, cond, frames)


# ---------------------------------------------------------------------------------------------------------------
# The figure.


def _figure_parts(H: int, Wd: int, body: Body, hair_style: str, pose: dict, ground: float, slots: dict,
                  only_garment: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Part ids [F, H, W] (uint8) and the head-top row per frame [F] of a figure in pose `pose`. `slots` maps the
    slot names present ("upper", "lower", "dress") to True. With `only_garment`, only that garment slot is drawn
    (the flat garment image)."""
    F = len(pose["cx"])
    hf, b = body.hf, body.build
    phi = _col(pose["facing"])
    sin_p, cos_p = np.sin(phi), np.cos(phi)
    k = 0.62 + 0.38 * np.abs(cos_p)
    cx = _col(pose["cx"])
    top = _col(ground - hf - np.asarray(pose["jump"]))
    canvas = _Canvas(F, H, Wd)
    draw_body = only_garment is None
    has = lambda slot: (only_garment == slot) if only_garment else slots.get(slot, False)

    # Dimensions.
    rx, ry = body.head_rx, body.head_ry
    hcx, hcy = cx + 0.01 * hf * sin_p, top + 0.075 * hf
    ys = top + 0.175 * hf  # shoulder line
    yhem = top + 0.54 * hf
    yh = top + 0.55 * hf  # hip joints (under the top's hem, so the legs never show beside it)
    sw, hw = 0.118 * hf * b * k, 0.088 * hf * b * k
    rs = 0.035 * hf  # shoulder rounding
    ra, la, lf = 0.03 * hf * b, 0.17 * hf, 0.15 * hf
    rl, ll = 0.036 * hf * b, 0.42 * hf

    def draw_arm(i, frames):
        side = -1.0 if i == 0 else 1.0
        jx, jy = cx + side * (sw - 0.5 * ra), ys + rs
        th = _col(pose[f"arm{i}"])
        th2 = th + _col(pose["bend"])
        ex, ey = jx + la * np.sin(th), jy + la * np.cos(th)
        wx, wy = ex + lf * np.sin(th2), ey + lf * np.cos(th2)
        if draw_body:
            canvas.capsule(SKIN, jx, jy, ex, ey, ra, frames)
            canvas.capsule(SKIN, ex, ey, wx, wy, ra * 0.92, frames)
            canvas.ellipse(SKIN, wx + 0.012 * hf * np.sin(th2), wy + 0.012 * hf * np.cos(th2), 0.032 * hf,
                           0.032 * hf, frames=frames)
        if has("upper"):
            sx, sy = jx + 0.6 * la * np.sin(th), jy + 0.6 * la * np.cos(th)
            canvas.capsule(UPPER, jx, jy, sx, sy, ra * 1.25, frames)

    far0 = np.abs(sin_p) > 0.5  # in profile arm 0 is behind the body
    draw_arm(0, far0)

    # Legs, feet, trousers; the legs start below the top's hem (their round tops never show beside it).
    below_hem = lambda X, Y: Y >= yhem
    for i in (0, 1):
        side = -1.0 if i == 0 else 1.0
        hx, hy = cx + side * 0.045 * hf * b * k, yh
        be = _col(pose[f"leg{i}"])
        ax, ay = hx + (ll - rl) * np.sin(be), hy + (ll - rl) * np.cos(be)
        ankle_x, ankle_y = hx + ll * np.sin(be), hy + ll * np.cos(be)
        if draw_body:
            canvas.capsule(SKIN, hx, hy, ax, ay, rl, cond=below_hem)
            canvas.ellipse(SKIN, ankle_x + 0.015 * hf * sin_p, ankle_y + 0.012 * hf,
                           0.035 * hf + 0.02 * hf * np.abs(sin_p), 0.018 * hf)
        if has("lower"):
            tx, ty = hx + 0.85 * (ll - rl) * np.sin(be), hy + 0.85 * (ll - rl) * np.cos(be)
            canvas.capsule(LOWER, hx, hy, tx, ty, rl * 1.25, cond=below_hem)
    if has("lower"):  # the seat: as wide as the top's hem, which covers its upper part
        canvas.quad(LOWER, [(cx - hw, top + 0.47 * hf), (cx + hw, top + 0.47 * hf), (cx + hw, top + 0.6 * hf),
                            (cx - hw, top + 0.6 * hf)])

    if draw_body:  # neck
        nw = 0.024 * hf
        canvas.quad(SKIN, [(cx - nw, hcy + 0.6 * ry), (cx + nw, hcy + 0.6 * ry), (cx + nw, ys + 0.02 * hf),
                           (cx - nw, ys + 0.02 * hf)])

    # Torso (top or dress), skirt.
    torso_slot = "upper" if has("upper") else "dress" if has("dress") else None
    if torso_slot is not None:
        value = SLOT[torso_slot]
        canvas.quad(value, [(cx - sw, ys + rs), (cx + sw, ys + rs), (cx + hw, yhem), (cx - hw, yhem)])
        canvas.capsule(value, cx - sw + rs, ys + rs, cx + sw - rs, ys + rs, rs)
    if has("dress"):
        sk = 0.17 * hf * b * k
        canvas.quad(DRESS, [(cx - hw, top + 0.42 * hf), (cx + hw, top + 0.42 * hf), (cx + sk, top + 0.80 * hf),
                            (cx - sk, top + 0.80 * hf)])

    if draw_body:
        # Head and hair.
        if hair_style == "bun":
            canvas.ellipse(HAIR, hcx - sin_p * 0.35 * rx, hcy - ry, 0.042 * hf, 0.042 * hf)
        canvas.ellipse(SKIN, hcx, hcy, rx, ry)
        threshold = 0.6 * cos_p**2  # front view: hair frames the face; profile: the back half; back: all

        def head_hair(X, Y):
            u = np.clip((X - hcx) / (1.12 * rx), -1, 1)
            back = u * sin_p + np.sqrt(1 - u * u) * cos_p < threshold
            return (Y < hcy + 0.35 * ry) & ((Y < hcy - 0.3 * ry) | back)

        canvas.ellipse(HAIR, hcx, hcy - 0.012 * hf, 1.12 * rx, 1.1 * ry, cond=head_hair)
        if hair_style == "long":
            def long_hair(X, Y):
                uL = np.clip((X - hcx) / (1.35 * rx), -1, 1)
                return uL * sin_p + np.sqrt(1 - uL * uL) * cos_p < 0.7 * cos_p**2

    # The near arms.
    draw_arm(0, ~far0)
    draw_arm(1, None)
    if draw_body and hair_style == "long":  # long hair falls over the shoulders, in front of the arms
        x0, x1 = hcx - 1.35 * rx, hcx + 1.35 * rx
        y0, y1 = hcy, top + 0.30 * hf
        canvas.quad(HAIR, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cond=long_hair)
    return canvas.parts, top.reshape(-1)


# ---------------------------------------------------------------------------------------------------------------
# Colours.


def pattern_mask(g: Garment, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """True where garment g shows its pattern colour; (u, v) are garment coordinates in pixels."""
    half = period / 2
    if g.pattern == "solid":
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    if g.pattern == "hstripes":
        return np.broadcast_to(np.floor(v / half) % 2 == 1, np.broadcast_shapes(u.shape, v.shape))
    if g.pattern == "vstripes":
        return np.broadcast_to(np.floor(u / half) % 2 == 1, np.broadcast_shapes(u.shape, v.shape))
    if g.pattern == "checks":
        return (np.floor(u / half) + np.floor(v / half)) % 2 == 1
    if g.pattern == "dots":
        return (u % period - half) ** 2 + (v % period - half) ** 2 <= (0.27 * period) ** 2
    raise ValueError(f"unknown pattern {g.pattern!r}; the tiny world has {W.PATTERNS}")


def _colour_garment(img, mask, g: Garment, u, v, period):
    base = np.array(W.GARMENT_COLOURS[g.colour], np.uint8)
    img[mask] = base
    if g.pattern != "solid":
        pm = mask & pattern_mask(g, u, v, period)
        img[pm] = np.array(W.GARMENT_COLOURS[g.pattern_colour], np.uint8)


def render_background(spec: Spec) -> np.ndarray:
    """The background alone, uint8 [H, W, 3] (wall, gradient, objects): what every non-figure pixel shows."""
    return _background(spec.background, spec.height, spec.width)


@functools.lru_cache(maxsize=64)
def _background(bg, H: int, Wd: int) -> np.ndarray:
    top = np.array(W.WALL_COLOURS[bg.top], np.float32)
    bottom = np.array(W.WALL_COLOURS[bg.bottom], np.float32)
    a = (np.arange(H, dtype=np.float32) / max(H - 1, 1)).reshape(H, 1, 1)
    img = np.broadcast_to(np.round(top * (1 - a) + bottom * a), (H, Wd, 3)).astype(np.uint8).copy()
    X = np.arange(Wd, dtype=np.float32).reshape(1, Wd) + 0.5
    Y = np.arange(H, dtype=np.float32).reshape(H, 1) + 0.5
    ground = W.GROUND * H
    for o in bg.objects:
        s = o.size * H
        x = o.x * Wd
        if o.kind == "box":
            m = (np.abs(X - x) <= 0.55 * s) & (Y >= ground - s) & (Y <= ground)
            img[m] = W.OBJECT_COLOURS[o.colour]
        elif o.kind == "plant":
            pot_h = 0.35 * s
            pot = _quad(X, Y, [(x - 0.3 * s, ground - pot_h), (x + 0.3 * s, ground - pot_h), (x + 0.2 * s, ground),
                               (x - 0.2 * s, ground)])
            leaves = (_ellipse(X, Y, x, ground - pot_h - 0.33 * s, 0.16 * s, 0.34 * s)
                      | _ellipse(X, Y, x - 0.22 * s, ground - pot_h - 0.2 * s, 0.2 * s, 0.12 * s)
                      | _ellipse(X, Y, x + 0.22 * s, ground - pot_h - 0.25 * s, 0.2 * s, 0.12 * s))
            img[leaves] = W.OBJECT_COLOURS["leaf"]
            img[pot] = W.OBJECT_COLOURS[o.colour]
        else:
            raise ValueError(f"unknown background object {o.kind!r}; the tiny world has {W.OBJECT_KINDS}")
    img.setflags(write=False)
    return img


def _compose(spec: Spec, parts: np.ndarray, top: np.ndarray, cx: np.ndarray, slot_garments: list[dict]):
    """RGB frames from part ids. `slot_garments[f]` maps slot names to the garment worn at frame f."""
    F, H, Wd = parts.shape
    img = np.broadcast_to(render_background(spec), (F, H, Wd, 3)).copy()
    img[parts == SKIN] = W.SKIN_TONES[spec.person.skin]
    img[parts == HAIR] = W.HAIR_COLOURS[spec.person.hair_colour]
    X = (np.arange(Wd, dtype=np.float32) + 0.5).reshape(1, 1, Wd)
    Y = (np.arange(H, dtype=np.float32) + 0.5).reshape(1, H, 1)
    u = X - cx.reshape(-1, 1, 1).astype(np.float32)
    v = Y - top.reshape(-1, 1, 1).astype(np.float32)
    # Group frames by outfit (a switch makes two groups).
    keys = [tuple(sorted((k, g) for k, g in sg.items())) for sg in slot_garments]
    for key in dict.fromkeys(keys):
        frames = np.array([kk == key for kk in keys])
        for slot, g in key:
            period = W.scaled_period(g.period, spec.height)
            mask = (parts == SLOT[slot]) & frames[:, None, None]
            _colour_garment(img, mask, g, np.broadcast_to(u, parts.shape), np.broadcast_to(v, parts.shape), period)
    return img


def _outfit(target: Garment, other: Garment | None) -> dict:
    out = {target.type: target}
    if other is not None:
        out[other.type] = other
    return out


def render_frames(spec: Spec, outfits: list[dict] | None = None, frames: slice | None = None):
    """(video uint8 [F, H, W, 3], parts uint8 [F, H, W], pose dict) of `spec`; `outfits[f]` overrides the
    garments of frame f (slot name -> Garment)."""
    pose = pose_track(spec)
    if frames is not None:
        pose = {k: v[frames] for k, v in pose.items()}
    F = len(pose["cx"])
    body = Body.of(spec.person, spec.height)
    if outfits is None:
        outfits = [_outfit(spec.target, spec.other)] * F
        if spec.switch_frame is not None:
            start = 0 if frames is None else (frames.start or 0)
            outfits = [_outfit(spec.switch_garment if start + f >= spec.switch_frame else spec.target, spec.other)
                       for f in range(F)]
    slots = {k: True for k in outfits[0]}
    ground = W.GROUND * spec.height
    parts, top = _figure_parts(spec.height, spec.width, body, spec.person.hair_style, pose, ground, slots)
    video = _compose(spec, parts, top, pose["cx"], outfits)
    return video, parts, pose, top


# ---------------------------------------------------------------------------------------------------------------
# The garment laid flat.


def _flat_pose(garment_type: str) -> dict:
    deg = np.pi / 180
    arm = 40 * deg if garment_type == "upper" else 8 * deg
    return dict(cx=np.zeros(1), jump=np.zeros(1), facing=np.zeros(1), arm0=np.array([-arm]), arm1=np.array([arm]),
                bend=np.zeros(1), leg0=np.array([-5 * deg]), leg1=np.array([5 * deg]))


@functools.lru_cache(maxsize=32)
def flat_layout(garment_type: str, height: int, width: int) -> tuple[int, float, float]:
    """(scale, cx, ground) of the flat garment image: the garment of a canonical (medium, average) figure is drawn
    `scale` times larger (an integer: pixel replication keeps the pattern exact) and centred, as curation's
    `fc_jax.images.fit_pad` fits a garment photo into the frame."""
    body = Body.of(Person("light", "black", "short", "medium", "average"), height)
    big_h, big_w = 2 * height, 2 * width
    pose = _flat_pose(garment_type)
    pose["cx"] = np.array([big_w / 2])
    parts, _ = _figure_parts(big_h, big_w, body, "short", pose, 1.5 * height, {}, only_garment=garment_type)
    ys, xs = np.nonzero(parts[0])
    bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    scale = max(1, int(min(0.9 * height / bh, 0.9 * width / bw)))
    # In the small canvas (height/scale x width/scale), centre the garment's bounding box.
    small_h, small_w = height / scale, width / scale
    cx = big_w / 2 - (xs.min() + xs.max() + 1) / 2 + small_w / 2
    ground = 1.5 * height - (ys.min() + ys.max() + 1) / 2 + small_h / 2
    return scale, float(cx), float(ground)


def render_garment_image(garment: Garment, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(image uint8 [H, W, 3] on white, garment mask bool [H, W], scale) of `garment` laid flat."""
    scale, cx, ground = flat_layout(garment.type, height, width)
    hs, ws = -(-height // scale), -(-width // scale)
    body = Body.of(Person("light", "black", "short", "medium", "average"), height)
    pose = _flat_pose(garment.type)
    pose["cx"] = np.array([cx])
    parts, top = _figure_parts(hs, ws, body, "short", pose, ground, {}, only_garment=garment.type)
    img = np.full((1, hs, ws, 3), 255, np.uint8)
    X = (np.arange(ws, dtype=np.float32) + 0.5).reshape(1, 1, ws)
    Y = (np.arange(hs, dtype=np.float32) + 0.5).reshape(1, hs, 1)
    mask = parts == SLOT[garment.type]
    u, v = np.broadcast_to(X - cx, mask.shape), np.broadcast_to(Y - top.reshape(-1, 1, 1), mask.shape)
    _colour_garment(img, mask, garment, u, v, W.scaled_period(garment.period, height))
    img = img[0].repeat(scale, 0).repeat(scale, 1)[:height, :width]
    mask = mask[0].repeat(scale, 0).repeat(scale, 1)[:height, :width]
    return np.ascontiguousarray(img), np.ascontiguousarray(mask), scale


# ---------------------------------------------------------------------------------------------------------------


def render_sample(spec: Spec) -> Sample:
    """Render `spec`: the video (target garment; switching at spec.switch_frame if set), the reference (frame 0,
    reference garment), the flat garment image, part maps and the pose per frame."""
    video, parts, pose, top = render_frames(spec)
    ref_outfit = [_outfit(spec.reference_garment, spec.other)]
    reference, ref_parts, _, _ = render_frames(spec, outfits=ref_outfit, frames=slice(0, 1))
    garment, gmask, scale = render_garment_image(spec.target, spec.height, spec.width)
    switch = None
    if spec.switch_garment is not None:
        switch, _, _ = render_garment_image(spec.switch_garment, spec.height, spec.width)
    body = Body.of(spec.person, spec.height)
    deg = 180 / np.pi
    out_pose = {
        "cx": pose["cx"], "cy": top + body.hf / 2, "top": top, "facing": pose["facing"] % (2 * np.pi),
        "arm_angle": pose["arm1"] * deg, "leg_angle": pose["leg1"] * deg, "jump": pose["jump"],
    }
    return Sample(
        spec=spec, video=video, reference=reference[0], garment=garment, parts=parts, reference_parts=ref_parts[0],
        garment_mask=gmask, pose={k: np.asarray(v, np.float32) for k, v in out_pose.items()}, flat_scale=scale,
        static_caption=static_caption(spec), dynamic_caption=dynamic_caption(spec), switch_garment=switch,
    )


def with_person(spec: Spec, **changes) -> Spec:
    """`spec` with some person attributes changed (e.g. skin="dark"): for building corrupted variants."""
    return dataclasses.replace(spec, person=dataclasses.replace(spec.person, **changes))
