"""Exact metrics on tiny-world videos, computed from pixels alone (no masks).

Each pixel of a generated frame is classified to the nearest of: the background colour at that pixel (from the
spec, `render_background`), or one of the 15 figure colours (3 skin tones, 3 hair colours, 9 garment colours;
`world.FIGURE_RGB`). Everything below is measured on that label map. The conditioning a metric may read is the
reference image, the garment image and the spec (captions, background, the person's proportions); nothing is
read from the ground-truth video or its masks, except where a docstring says a score is *relative to* the ground
truth's own value of the same estimator (Amp, Smoo), which is rendered from the spec.

Inputs: videos uint8 or float in [0, 255], [F, H, W, 3] (use `from_model_range` for [-1, 1] model outputs).
Outputs: plain dicts of floats. Ranges and ideal values are in each function's docstring.

Column map to the paper (HGC-Bench): ID ~ Cur (identity kept), motion alignment ~ GME (video agrees with the
caption), Amp, Smoo, VQ, HGC (high-level garment consistency), LGC (low-level), NTP (non-target preservation);
plus switch metrics for garment switching mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fc_jax.tinyworld import world as W
from fc_jax.tinyworld.render import SLOT_REACH, SLOT_ROWS, Body, flat_layout, render_background, render_garment_image, render_sample
from fc_jax.tinyworld.spec import Spec, dynamic_caption, parse_dynamic_caption

BACKGROUND = -1  # label of background pixels
VQ_SIGMA = 10.0  # colour tolerance of the VQ purity score, in 0..255 units
BG_TOLERANCE = 30.0  # a background pixel is preserved if within this RGB distance of the expected background
NEW_GARMENT_SHOWN = 0.9  # switch latency: the new garment covers this fraction of the garment region
MIN_REGION = 30  # pixels: a garment region smaller than this counts as missing in a frame

_GARMENT_IDX = np.flatnonzero(W.IS_GARMENT)
_SKIN_IDX = np.flatnonzero(W.IS_SKIN)
_HAIR_IDX = np.flatnonzero(W.IS_HAIR)


# ---------------------------------------------------------------------------------------------------------------
# Pixels and labels.


def from_model_range(x) -> np.ndarray:
    """[-1, 1] model pixels -> float32 [0, 255]."""
    return (np.asarray(x, np.float32) + 1.0) * 127.5


def as_pixels(video) -> np.ndarray:
    """float32 in [0, 255] of a uint8 or [0, 255] float array (floats are clipped to [0, 255], as writing a
    video would); raises on floats that look like [-1, 1] model pixels (all <= 1, some negative)."""
    v = np.asarray(video)
    if v.dtype == np.uint8:
        return v.astype(np.float32)
    v = v.astype(np.float32)
    if v.size and v.max() <= 1.0 + 1e-3 and v.min() < -1e-3:
        raise ValueError(f"pixels must be uint8 or floats in [0, 255], found floats in [{v.min():.3f}, "
                         f"{v.max():.3f}]; convert [-1, 1] model outputs with from_model_range")
    return np.clip(v, 0.0, 255.0)


def _nearest(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for pixels [..., 3] (float32)."""
    flat = pixels.reshape(-1, 3)
    d2 = (palette * palette).sum(1)[None] - 2 * flat[:, :1] * palette[:, 0]  # |x|^2 is the same for every entry
    d2 -= 2 * flat[:, 1:2] * palette[:, 1]
    d2 -= 2 * flat[:, 2:3] * palette[:, 2]
    return d2.argmin(1).reshape(pixels.shape[:-1])


_FIGURE_LUT: np.ndarray | None = None


def _figure_lut() -> np.ndarray:
    """int8 [2^21]: for each cell of 2x2x2 RGB values (7 bits per channel), the nearest figure colour of every
    colour in the cell, or -1 where the cell is within reach of a decision boundary (those pixels are computed
    exactly). Built once (2 MiB)."""
    global _FIGURE_LUT
    if _FIGURE_LUT is None:
        code = np.arange(1 << 21, dtype=np.int64)
        centre = np.stack([code >> 14, (code >> 7) & 127, code & 127], 1).astype(np.float32) * 2 + 1
        d2 = (centre[:, :1] - W.FIGURE_RGB[:, 0]) ** 2
        d2 += (centre[:, 1:2] - W.FIGURE_RGB[:, 1]) ** 2
        d2 += (centre[:, 2:3] - W.FIGURE_RGB[:, 2]) ** 2
        rows = np.arange(len(d2))
        best = d2.argmin(1)
        first = d2[rows, best]
        d2[rows, best] = np.inf
        second = d2.min(1)
        reach = np.sqrt(3.0)  # any float colour in [2q, 2q + 2)^3 is this close to the cell centre
        safe = np.sqrt(second) - np.sqrt(first) > 2 * reach + 1e-3
        _FIGURE_LUT = np.where(safe, best, -1).astype(np.int8)
    return _FIGURE_LUT


def _codes(px: np.ndarray) -> np.ndarray:
    """24-bit codes of pixels rounded to 8 bits per channel."""
    q = np.clip(np.rint(px), 0, 255).astype(np.int64)
    return (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]


def _nearest_figure(px: np.ndarray) -> np.ndarray:
    """Exact nearest figure colour index (int16) of float pixels [..., 3]."""
    q = np.clip(np.floor(px / 2), 0, 127).astype(np.int64)
    idx = _figure_lut()[(q[..., 0] << 14) | (q[..., 1] << 7) | q[..., 2]].astype(np.int16)
    hard = idx < 0
    if hard.any():
        idx[hard] = _nearest(px[hard], W.FIGURE_RGB)
    return idx


def classify(video, background: np.ndarray) -> np.ndarray:
    """Labels int16 [..., H, W]: BACKGROUND (-1) where the pixel is nearer the expected background colour at that
    pixel than any figure colour, else the index of the nearest figure colour (`world.FIGURE_NAMES`)."""
    px = as_pixels(video)
    bg = np.asarray(background, np.float32)
    idx = _nearest_figure(px)
    d_fig = ((px - W.FIGURE_RGB[idx]) ** 2).sum(-1)
    d_bg = ((px - bg) ** 2).sum(-1)
    return np.where(d_bg <= d_fig, np.int16(BACKGROUND), idx)


def classify_garment_image(image) -> np.ndarray:
    """Labels int16 [H, W] of a garment laid flat on white: BACKGROUND for white, else the nearest garment
    colour's figure index."""
    px = as_pixels(image)
    palette = np.concatenate([np.array([W.WHITE], np.float32), W.FIGURE_RGB[_GARMENT_IDX]])
    idx = _nearest(px, palette)
    return np.where(idx == 0, BACKGROUND, _GARMENT_IDX[np.maximum(idx - 1, 0)]).astype(np.int16)


@dataclass
class Track:
    """Per-frame figure measurements from a label map (float [F]; NaN where a frame shows no figure)."""

    cx: np.ndarray  # mean x of figure pixels
    top: np.ndarray  # first row with >= 2 figure pixels
    bottom: np.ndarray  # last such row
    width: np.ndarray  # columns spanned (columns with >= 2 figure pixels)
    hair_count: np.ndarray
    hair_dx: np.ndarray  # mean x of hair pixels minus cx
    hair_top: np.ndarray
    hair_bottom: np.ndarray

    @property
    def height(self) -> np.ndarray:
        return self.bottom - self.top + 1


def _extent(counts: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """First and last index along the last axis with counts >= minimum (NaN if none)."""
    ok = counts >= minimum
    any_ = ok.any(-1)
    first = np.where(any_, ok.argmax(-1), np.nan)
    last = np.where(any_, counts.shape[-1] - 1 - ok[..., ::-1].argmax(-1), np.nan)
    return first.astype(np.float64), last.astype(np.float64)


def track(labels: np.ndarray) -> Track:
    fg = labels >= 0
    hair = np.isin(labels, _HAIR_IDX)
    F, H, Wd = labels.shape
    xs = np.arange(Wd) + 0.5
    n = fg.sum((1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (fg.sum(1) * xs).sum(1) / n
        nh = hair.sum((1, 2)).astype(np.float64)
        hx = (hair.sum(1) * xs).sum(1) / nh
    top, bottom = _extent(fg.sum(2))
    left, right = _extent(fg.sum(1))
    htop, hbottom = _extent(hair.sum(2))
    return Track(cx=np.where(n > 0, cx, np.nan), top=top, bottom=bottom, width=right - left + 1, hair_count=nh,
                 hair_dx=np.where(nh > 0, hx - cx, np.nan), hair_top=htop, hair_bottom=hbottom)


def _mean(values) -> float:
    v = np.asarray(values, np.float64)
    return float(np.mean(np.nan_to_num(v, nan=0.0))) if v.size else 0.0


def _labels_of(spec: Spec, video, reference=None):
    bg = render_background(spec)
    lv = classify(video, bg)
    lr = None if reference is None else classify(np.asarray(reference)[None], bg)
    return lv, lr


# ---------------------------------------------------------------------------------------------------------------
# Garment regions.


def _slot_rows(spec: Spec, slot: str, top: np.ndarray, reach: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows [r0, r1) of a garment slot per frame (`render.SLOT_ROWS`, or `SLOT_REACH` with reach), from the
    measured figure top and the person's proportions."""
    body = Body.of(spec.person, spec.height)
    head_top = top + body.top_protrusion(spec.person.hair_style)
    a, b = (SLOT_REACH if reach else SLOT_ROWS)[slot]
    return head_top + a * body.hf, head_top + b * body.hf


def _row_mask(H: int, r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
    rows = np.arange(H) + 0.5
    r0, r1 = np.nan_to_num(r0, nan=-1.0), np.nan_to_num(r1, nan=-1.0)
    return (rows[None] >= r0[:, None]) & (rows[None] < r1[:, None])  # [F, H]


def garment_region(labels: np.ndarray, spec: Spec, slot: str, tr: Track | None = None) -> np.ndarray:
    """bool [F, H, W]: pixels of any garment colour inside the rows of `slot`."""
    tr = track(labels) if tr is None else tr
    rows = _row_mask(labels.shape[1], *_slot_rows(spec, slot, tr.top))
    return np.isin(labels, _GARMENT_IDX) & rows[:, :, None]


def _histogram(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised counts over the figure palette of labels inside mask (per leading index)."""
    K = len(W.FIGURE_NAMES)
    lab = np.where(mask, labels, K).reshape(mask.shape[0], -1).astype(np.int64)
    counts = np.stack([np.bincount(row, minlength=K + 1)[:K] for row in lab]).astype(np.float64)
    total = counts.sum(1, keepdims=True)
    return np.where(total > 0, counts / np.maximum(total, 1), 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Pattern analysis.


def _run_periods(B: np.ndarray, R: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
    """Repeat candidates (pixels) of binary map B inside region R along `axis` (0: down columns, 1: along rows):
    the length of each complete run of one colour plus the next complete run of the other, where "complete"
    means both neighbours of the run lie in the region (the region's edges cut the others). Stripes and checks
    give P/2 + P/2, dots give chord + gap = P, for a pattern of repeat P. Also returns the transition-density
    estimate 2 x (neighbour pairs in the region) / (colour changes between them), = P for stripes and checks: the
    fallback where a region is too narrow for complete runs (NaN without changes)."""
    C = np.where(R, B, -1).astype(np.int8)
    if axis == 0:
        C = C.T
    flat = np.concatenate([C, np.full((C.shape[0], 1), -1, np.int8)], 1).reshape(-1)
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    values = flat[starts]
    inside = values >= 0
    complete = inside.copy()
    complete[1:] &= inside[:-1]
    complete[:-1] &= inside[1:]
    complete[0] = complete[-1] = False
    pair = complete[:-1] & complete[1:]
    both = (flat[1:] >= 0) & (flat[:-1] >= 0)
    changes = (both & (flat[1:] != flat[:-1])).sum()
    density = 2 * both.sum() / changes if changes else np.nan
    return (lengths[:-1] + lengths[1:])[pair], density


def pattern_features(labels: np.ndarray, region: np.ndarray, base: int, second: int | None) -> dict:
    """Pattern of a garment region (2-D label map and mask) given its base and pattern colour (figure indices):
    kind (solid | hstripes | vstripes | checks | dots | None when the region shows too little of the two
    colours), period (pixels, full repeat; NaN if solid/unknown), frac (pattern-colour fraction)."""
    colours = [base] if second is None else [base, second]
    R = region & np.isin(labels, colours)
    n = R.sum()
    if n < MIN_REGION or n < 0.5 * max(region.sum(), 1):
        return {"kind": None, "period": np.nan, "frac": np.nan}
    if second is None:
        return {"kind": "solid", "period": np.nan, "frac": 0.0}
    B = (labels == second).astype(np.float64)
    frac = float(B[R].mean())
    if frac < 0.06 or frac > 0.94:
        return {"kind": "solid", "period": np.nan, "frac": frac}

    def within(axis):  # mean variance of B along `axis` (rows: axis=1 is variation along x)
        cnt = R.sum(axis)
        p = (B * R).sum(axis) / np.maximum(cnt, 1)
        ok = cnt >= 4
        return float((cnt * p * (1 - p))[ok].sum() / max(cnt[ok].sum(), 1))

    sx, sy = within(1), within(0)
    if sx < 0.35 * sy:
        kind = "hstripes"
    elif sy < 0.35 * sx:
        kind = "vstripes"
    else:  # checks put the pattern colour in every row; dots leave rows between them plain
        cnt = R.sum(1)
        wide = cnt >= 6
        rows_with = ((B * R).sum(1) > 0)[wide].mean() if wide.any() else 0.0
        kind = "checks" if frac >= 0.33 and rows_with >= 0.8 else "dots"
    axes = {"hstripes": (0,), "vstripes": (1,)}.get(kind, (0, 1))
    runs = [_run_periods(B, R, a) for a in axes]
    cands = np.concatenate([r[0] for r in runs])
    if len(cands) >= 3:
        period = float(np.median(cands))
    elif kind != "dots" and np.isfinite([r[1] for r in runs]).any():
        period = float(np.nanmean([r[1] for r in runs]))
    else:
        period = np.nan  # the region is narrower than the repeat
    return {"kind": kind, "period": period, "frac": frac}


def garment_image_features(image, scale: int) -> dict:
    """What a garment image shows: colour histogram over the figure palette, base and pattern colour (figure
    indices), pattern kind and period (in body pixels: divided by the image's `scale`), and its colour set."""
    lab = classify_garment_image(image)
    mask = lab >= 0
    hist = _histogram(lab[None], mask[None])[0]
    order = np.argsort(-hist)
    base = int(order[0])
    second = int(order[1]) if hist[order[1]] >= 0.05 else None
    feats = pattern_features(lab, mask, base, second)
    return {"hist": hist, "base": base, "second": second, "kind": feats["kind"],
            "period": feats["period"] / scale, "colours": {base} | ({second} if second is not None else set()),
            "mask": mask}


def garment_type_from_image(image) -> str:
    """upper | lower | dress, from the silhouette of a garment laid flat: trousers have a gap between the legs
    at the bottom; a top is wider than tall (sleeves); a dress is taller than wide."""
    mask = classify_garment_image(image) >= 0
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("the garment image shows no garment (all white)")
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    row = mask[y0 + int(0.9 * (y1 - y0))][x0:x1 + 1]
    runs = np.count_nonzero(np.diff(row.astype(np.int8)) == 1) + int(row[0])
    if runs >= 2:
        return "lower"
    return "upper" if (y1 - y0) < (x1 - x0) else "dress"


# ---------------------------------------------------------------------------------------------------------------
# ID.


def _dominant(labels: np.ndarray, candidates: np.ndarray) -> int | None:
    counts = np.array([(labels == c).sum() for c in candidates])
    return int(candidates[counts.argmax()]) if counts.sum() else None


def _colour_consistency(lv: np.ndarray, candidates: np.ndarray, expected: int | None) -> np.ndarray:
    """Per frame: fraction of pixels of this kind (skin/hair) that have the expected colour."""
    total = np.isin(lv, candidates).sum((1, 2))
    if expected is None:
        return np.zeros(len(lv))
    same = (lv == expected).sum((1, 2))
    return np.where(total > 0, same / np.maximum(total, 1), 0.0)


def _interval_iou(a0, a1, b0, b1):
    inter = np.maximum(0, np.minimum(a1, b1) - np.maximum(a0, b0) + 1)
    union = np.maximum(a1, b1) - np.minimum(a0, b0) + 1
    return np.where(np.isfinite(a0) & np.isfinite(b0), inter / np.maximum(union, 1e-9), 0.0)


def identity_metrics(video, reference, spec: Spec, labels=None) -> dict:
    """ID: is the reference person kept? All in [0, 1], ideal 1 (the ground truth scores 1 within 0.02).

    - `skin`: mean over frames of the fraction of skin-coloured pixels with the reference's skin tone.
    - `hair_colour`: the same for hair.
    - `hair_region`: mean over frames of the IoU of the hair's row extent (rows with >= 2 hair pixels, counted
      from the figure top) with the reference's (hair style: short, long, bun; facing does not change it).
    - `height`: 1 - |h - h_ref| / (0.5 h_ref), clipped to [0, 1], h = the tallest frame's figure height.
    - `id`: the mean of the four.
    """
    lv, lr = labels if labels is not None else _labels_of(spec, video, reference)
    tv, tref = track(lv), track(lr)
    skin = _colour_consistency(lv, _SKIN_IDX, _dominant(lr, _SKIN_IDX))
    hair = _colour_consistency(lv, _HAIR_IDX, _dominant(lr, _HAIR_IDX))
    h_ref = tref.height[0]
    rel = lambda t, v: v - t.top  # rows below the figure top
    region = _interval_iou(rel(tv, tv.hair_top), rel(tv, tv.hair_bottom), rel(tref, tref.hair_top)[0],
                           rel(tref, tref.hair_bottom)[0])
    h = np.nanmax(tv.height) if np.isfinite(tv.height).any() else 0.0
    height = float(np.clip(1 - abs(h - h_ref) / (0.5 * h_ref), 0, 1)) if np.isfinite(h_ref) else 0.0
    out = {"skin": _mean(skin), "hair_colour": _mean(hair), "hair_region": _mean(region), "height": height}
    out["id"] = float(np.mean(list(out.values())))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Motion.

_COARSE = np.zeros(len(W.FIGURE_NAMES) + 1, np.int8)  # index -1 (background) -> last entry -> 0
_COARSE[np.flatnonzero(W.IS_SKIN)] = 1
_COARSE[np.flatnonzero(W.IS_HAIR)] = 2
_COARSE[np.flatnonzero(W.IS_GARMENT)] = 3


def face_offset(labels: np.ndarray, tr: Track, spec: Spec) -> np.ndarray:
    """Per frame: mean x of skin minus mean x of hair in the head's rows (px; NaN without both). Positive when
    the face looks to the viewer's right (the hair is at the back of the head), negative to the left."""
    body = Body.of(spec.person, spec.height)
    r0 = tr.top
    r1 = tr.top + body.top_protrusion(spec.person.hair_style) + 0.15 * body.hf
    rows = _row_mask(labels.shape[1], r0, r1)[:, :, None]
    xs = np.arange(labels.shape[2]) + 0.5

    def mean_x(mask):
        m = mask & rows
        n = m.sum((1, 2))
        return np.where(n > 0, (m.sum(1) * xs).sum(1) / np.maximum(n, 1), np.nan)

    return mean_x(np.isin(labels, _SKIN_IDX)) - mean_x(np.isin(labels, _HAIR_IDX))


def amplitude(labels: np.ndarray) -> float:
    """Mean over consecutive frames of the fraction of figure pixels (union of both frames) whose coarse class
    (background / skin / hair / garment) changes: a label-flow magnitude, 0 for a still video."""
    coarse = _COARSE[labels]
    fg = coarse > 0
    if len(labels) < 2:
        return 0.0
    changed = (coarse[1:] != coarse[:-1]).sum((1, 2))
    union = (fg[1:] | fg[:-1]).sum((1, 2))
    return _mean(np.where(union > 0, changed / np.maximum(union, 1), 0.0))


def smoothness(tr: Track) -> float:
    """1 / (1 + mean|second difference| / (mean|first difference| + 0.5 px)) of the trajectory
    (cx, top, width / 2): 1 for constant velocity or a still figure, lower for jerky or shuffled motion."""
    p = np.stack([tr.cx, tr.top, tr.width / 2], 1)
    p = np.nan_to_num(p, nan=0.0)
    if len(p) < 3:
        return 1.0
    d1 = np.linalg.norm(np.diff(p, axis=0), axis=1).mean()
    d2 = np.linalg.norm(np.diff(p, 2, axis=0), axis=1).mean()
    return float(1 / (1 + d2 / (d1 + 0.5)))


def _ratio(a: float, b: float, eps: float = 1e-9) -> float:
    a, b = abs(a), abs(b)
    return float((min(a, b) + eps) / (max(a, b) + eps))


def motion_metrics(video, spec: Spec, caption: str | None = None, labels=None, ground_truth=None) -> dict:
    """Motion against the dynamic caption (default: the spec's). Ideal values in brackets.

    - `motion_alignment` [1] in [0, 1]: the caption's motion measured on the figure's trajectory (centre x =
      mean x of figure pixels, top row, width):
      walks: right direction (sign of the least-squares speed) x speed ratio min(v, v_c) / max(v, v_c) against
      the caption's speed (`world.walk_speed_px`) x no bounce; jump: bounce (range of the top row) ratio
      against the jump height x staying in place; arm swing: width range / (0.4 x figure height), clipped, x in
      place; turn: hair pixel count range / max >= 0.3 (scaled), x turning the stated way (the face to the
      viewer's right in the first half: `face_offset` > 0), x in place; the jump's bounce allows +-1 px; stand: 1 / (1 + mean |frame-to-frame
      change| of cx, top and width in px). "In place" = 1 - |v| / v_slow clipped.
    - `speed_px` (measured, signed px/frame), `expected_speed_px`, `bounce_px`.
    - `figure_kept` [1] in [0, 1]: the share of frames whose figure spans the ground truth's height within 25%
      (a figure that dissolves or multiplies is not one figure moving).
    - `direction_ok` [1] in {0, 1}: the figure is kept (`figure_kept` >= 0.9) and goes the caption's way: walks
      move in the caption's direction at least a quarter of the slow walking speed; every other motion stays in
      place (|v| under half of it).
    - `amp` (>= 0): `amplitude` (fraction of figure pixels changing class per frame); `amp_gt` the same for the
      ground-truth render of the spec; `amp_score` [1] = min/max ratio of the two (+0.005), in [0, 1].
    - `smoo` in (0, 1]: `smoothness`; `smoo_gt` the ground truth's (1 for steady motions; the jump's landings
      lower it to about 0.7); `smoo_score` [1] = min(1, smoo / smoo_gt).
    """
    motion = parse_dynamic_caption(caption if caption is not None else dynamic_caption(spec))
    lv = labels if labels is not None else _labels_of(spec, video)[0]
    tr = track(lv)
    F = len(lv)
    t = np.arange(F, dtype=np.float64)
    cx = np.nan_to_num(tr.cx, nan=np.nanmean(tr.cx) if np.isfinite(tr.cx).any() else 0.0)
    top = np.nan_to_num(tr.top, nan=0.0)
    width = np.nan_to_num(tr.width, nan=0.0)
    v = float(np.polyfit(t, cx, 1)[0]) if F > 1 else 0.0
    v_slow = W.walk_speed_px("slow", spec.width, spec.num_frames, spec.height)
    body = Body.of(spec.person, spec.height)
    J = W.JUMP_HEIGHT * spec.height
    bounce = float(top.max() - top.min())
    in_place = float(np.clip(1 - abs(v) / v_slow, 0, 1))
    expected_v = 0.0
    if motion.kind.startswith("walk"):
        sign = 1.0 if motion.kind == "walk_right" else -1.0
        expected_v = sign * W.walk_speed_px(motion.speed, spec.width, spec.num_frames, spec.height)
        no_bounce = float(np.clip(1 - max(0.0, bounce - 3) / J, 0, 1))
        align = (v * sign > 0) * _ratio(v, expected_v) * no_bounce
    elif motion.kind == "jump":
        measured = bounce + float(np.clip(J - bounce, -1, 1))  # rows are whole pixels: +-1 px counts as exact
        align = _ratio(measured, J) * in_place
    elif motion.kind == "arm_swing":
        align = float(np.clip((width.max() - width.min()) / (0.4 * body.hf), 0, 1)) * in_place
    elif motion.kind == "turn":
        hc = tr.hair_count
        variation = float((hc.max() - hc.min()) / max(hc.max(), 1))
        first = np.nan_to_num(face_offset(lv, tr, spec)[: F // 2], nan=0.0).mean()
        align = float(np.clip(variation / 0.3, 0, 1)) * float(first > 0) * in_place
    else:  # stand
        change = np.abs(np.diff(cx)).mean() + np.abs(np.diff(top)).mean() + np.abs(np.diff(width)).mean() \
            if F > 1 else 0.0
        align = 1 / (1 + change)
    gt = ground_truth if ground_truth is not None else render_sample(spec)
    gt_labels = classify(gt.video, render_background(spec))
    gt_height = track(gt_labels).height
    figure_kept = float(np.mean(np.abs(np.nan_to_num(tr.height, nan=0.0) - gt_height) <= 0.25 * gt_height))
    if motion.kind.startswith("walk"):
        direction_ok = float(v * np.sign(expected_v) >= 0.25 * v_slow)
    else:
        direction_ok = float(abs(v) < 0.5 * v_slow)
    direction_ok *= float(figure_kept >= 0.9)
    amp, amp_gt = amplitude(lv), amplitude(gt_labels)
    smoo, smoo_gt = smoothness(tr), smoothness(track(gt_labels))
    return {
        "motion_alignment": float(align), "direction_ok": direction_ok, "figure_kept": figure_kept, "speed_px": v,
        "expected_speed_px": expected_v, "bounce_px": bounce,
        "amp": amp, "amp_gt": amp_gt, "amp_score": _ratio(amp + 0.005, amp_gt + 0.005),
        "smoo": smoo, "smoo_gt": smoo_gt, "smoo_score": float(min(1.0, smoo / max(smoo_gt, 1e-9))),
    }


# ---------------------------------------------------------------------------------------------------------------
# VQ.


def _vq_palette_arrays():
    points, segments = W.vq_palette()
    return points.astype(np.float32), segments.astype(np.float32)


def _vq_pixels_np(px: np.ndarray) -> np.ndarray:
    points, segs = _vq_palette_arrays()
    d2p = ((px[..., None, :] - points) ** 2).sum(-1)
    a, ab = segs[:, 0], segs[:, 1] - segs[:, 0]
    t = np.clip(((px[..., None, :] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    d2s = ((px[..., None, :] - a - t[..., None] * ab) ** 2).sum(-1)
    d2 = np.concatenate([d2p, d2s], -1)
    e = np.exp(-d2 / (2 * VQ_SIGMA**2))
    return 1 - np.exp(np.log(np.clip(1 - e, 1e-6, 1)).sum(-1))


def vq_score(frames) -> np.ndarray:
    """VQ per frame, float64 [N], in [0, 1], ideal 1: rendering purity, the mean over pixels of a soft-OR over
    the palette (figure colours, white, object colours, every wall gradient segment) of
    exp(-d^2 / (2 sigma^2)), sigma = 10 (0..255 units): 1 - prod_k (1 - exp(-d_k^2 / 2 sigma^2)). A clean render
    scores >= 0.999 (1 up to 1e-6 on plain walls; a gradient's uint8 rounding leaves pixels up to 0.9 off its
    segment); noise, blur (mixed colours at edges) and off-palette colours score lower.
    `frames`: uint8 or float [0, 255], [N, H, W, 3] (or [H, W, 3])."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype == np.uint8:  # score each distinct colour once
        codes = _codes(frames.astype(np.int64))
        uniq, inverse = np.unique(codes, return_inverse=True)
        rgb = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], 1).astype(np.float32)
        per = np.concatenate([_vq_pixels_np(rgb[i:i + 65536]) for i in range(0, len(rgb), 65536)])
        return per[inverse.reshape(codes.shape)].mean((1, 2)).astype(np.float64)
    px = as_pixels(frames)
    return np.array([_vq_pixels_np(px[i]).mean() for i in range(len(px))], np.float64)


def vq_palette_params() -> dict[str, np.ndarray]:
    """The VQ score's palette and tolerance as the parameters of `fc_jax.models.reward.palette_purity_scores`
    (the stage-3 reward's `distill.reward_from`, saved with `np.savez`)."""
    points, segments = _vq_palette_arrays()
    return {"points": points, "segments": segments, "sigma": np.float32(VQ_SIGMA)}


def vq_score_jax(frames):
    """The same score as `vq_score`, in JAX and differentiable (the stage-3 reward): `frames` float [N, H, W, 3]
    in [-1, 1] -> float32 [N]."""
    from fc_jax.models.reward import palette_purity_scores

    return palette_purity_scores(vq_palette_params(), frames)


def vq_metrics(video) -> dict:
    """`vq`: mean of `vq_score` over frames, in [0, 1], ideal 1."""
    return {"vq": float(vq_score(video).mean())}


# ---------------------------------------------------------------------------------------------------------------
# Garment consistency.


def _pattern_scores(lv, region, feats_img) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: kind match, period score, orientation match against the garment image's features."""
    kinds, periods, orients = [], [], []
    exp_kind = feats_img["kind"]
    orient = lambda k: k if k in ("hstripes", "vstripes") else "none"
    for f in range(len(lv)):
        feats = pattern_features(lv[f], region[f], feats_img["base"], feats_img["second"])
        kinds.append(float(feats["kind"] == exp_kind))
        orients.append(float(feats["kind"] is not None and orient(feats["kind"]) == orient(exp_kind)))
        if exp_kind == "solid" or feats["kind"] in (None, "solid"):
            periods.append(float(feats["kind"] == exp_kind))
        elif np.isfinite(feats["period"]) and np.isfinite(feats_img["period"]):
            periods.append(_ratio(feats["period"], feats_img["period"]))
        else:  # too narrow to measure: agreement only if neither shows a repeat
            periods.append(float(np.isfinite(feats["period"]) == np.isfinite(feats_img["period"])))
    return np.array(kinds), np.array(periods), np.array(orients)


def _colour_match(hist: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per row of `hist` [F, K]: (share of pixels in the expected colour set) x min over the expected colours c of
    min(1, share_c / (0.5 x expected share_c)); 1 when a region shows exactly the expected colours in roughly
    the expected proportions, 0 when it shows none of them."""
    colours = np.flatnonzero(expected >= 0.05)
    in_set = hist[:, colours].sum(1)
    each = np.minimum(1.0, hist[:, colours] / (0.5 * expected[colours])).min(1)
    return in_set * each


def garment_metrics(video, garment_image, spec: Spec, labels=None) -> dict:
    """Is the garment of the garment image what the video shows in its slot (`spec.target.type`)?
    All in [0, 1], ideal 1 (the ground truth scores >= 0.9 on each; see the tests for the tolerances).

    High level (HGC):
    - `colour`: mean over frames of `_colour_match` of the garment colours in the slot's rows against the garment
      image's colours (share in the image's colour set x each image colour present in at least half its share).
    - `type`: mean over frames of the F1 of (share of the pixels of the image's garment colours that lie in the
      rows the slot may reach, share of the slot's core rows that show them): a top drawn as a dress, or
      trousers as a top, scores low.
    - `hgc` = mean(colour, type).
    Low level (LGC), from `pattern_features` of the slot region vs the garment image:
    - `pattern_kind`: fraction of frames whose pattern kind (solid / h-stripes / v-stripes / checks / dots) is
      the image's; `pattern_orientation`: the same for stripe orientation alone (h / v / none);
    - `pattern_period`: mean over frames of min/max of the measured repeat and the image's (divided by the
      image's scale); for solid garments 1 when the frame is solid too; where a region is narrower than the
      repeat (wide vertical stripes on a trouser leg), 1 if neither shows a measurable repeat.
    - `lgc` = mean(pattern_kind, pattern_period).
    """
    lv = labels if labels is not None else _labels_of(spec, video)[0]
    scale = flat_layout(spec.target.type, spec.height, spec.width)[0]
    feats = garment_image_features(garment_image, scale)
    tr = track(lv)
    slot = spec.target.type
    region = garment_region(lv, spec, slot, tr)
    colour = _colour_match(_histogram(lv, region), feats["hist"])
    target_px = np.isin(lv, sorted(feats["colours"]))
    rows = _row_mask(lv.shape[1], *_slot_rows(spec, slot, tr.top))
    reach = _row_mask(lv.shape[1], *_slot_rows(spec, slot, tr.top, reach=True))
    inside = (target_px & reach[:, :, None]).sum((1, 2))
    precision = inside / np.maximum(target_px.sum((1, 2)), 1)
    coverage = (target_px & rows[:, :, None]).any(2).sum(1) / np.maximum(rows.sum(1), 1)
    type_score = np.where(precision + coverage > 0, 2 * precision * coverage / np.maximum(precision + coverage, 1e-9),
                          0.0)
    kinds, periods, orients = _pattern_scores(lv, region, feats)
    out = {"colour": _mean(colour), "type": _mean(type_score)}
    out["hgc"] = (out["colour"] + out["type"]) / 2
    out.update(pattern_kind=_mean(kinds), pattern_period=_mean(periods), pattern_orientation=_mean(orients))
    out["lgc"] = (out["pattern_kind"] + out["pattern_period"]) / 2
    return out


# ---------------------------------------------------------------------------------------------------------------
# NTP.


def garment_consistency(scores: dict) -> float:
    """The one garment figure of a scored video (or a mean of scores): (high level + low level) / 2 of its
    `garment/hgc` and `garment/lgc` (the tables' `student_over_teacher_garment` divides two of these)."""
    return (float(scores["garment/hgc"]) + float(scores["garment/lgc"])) / 2


def ntp_metrics(video, reference, spec: Spec, labels=None) -> dict:
    """Non-target preservation: what is not the target garment stays as in the reference. In [0, 1], ideal 1.

    - `background`: mean over frames of (fraction of background-labelled pixels within 30 RGB of the expected
      background there) x min(1, background pixel count / (0.9 x the reference's)).
    - `other_garment`: mean over frames of `_colour_match` of the garment colours in the other slot's rows
      (trousers when the target is a top, the top when it is trousers) against the reference's there; 1 for a
      dress (there is no other garment).
    - `skin`, `hair`: the identity metrics' colour consistencies with the reference.
    - `ntp` = mean of the four.
    """
    lv, lr = labels if labels is not None else _labels_of(spec, video, reference)
    px = as_pixels(video)
    bg = render_background(spec).astype(np.float32)
    is_bg = lv == BACKGROUND
    close = (((px - bg) ** 2).sum(-1) <= BG_TOLERANCE**2) & is_bg
    n_bg = is_bg.sum((1, 2))
    n_ref = (lr == BACKGROUND).sum()
    background = np.where(n_bg > 0, close.sum((1, 2)) / np.maximum(n_bg, 1), 0.0) * np.minimum(
        1.0, n_bg / max(0.9 * n_ref, 1))
    if spec.target.type == "dress":
        other = np.ones(len(lv))
    else:
        slot = "lower" if spec.target.type == "upper" else "upper"
        hv = _histogram(lv, garment_region(lv, spec, slot))
        hr = _histogram(lr, garment_region(lr, spec, slot))
        other = _colour_match(hv, hr[0])
    skin = _colour_consistency(lv, _SKIN_IDX, _dominant(lr, _SKIN_IDX))
    hair = _colour_consistency(lv, _HAIR_IDX, _dominant(lr, _HAIR_IDX))
    out = {"background": _mean(background), "other_garment": _mean(other), "skin": _mean(skin), "hair": _mean(hair)}
    out["ntp"] = float(np.mean(list(out.values())))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Switching.


def switch_metrics(video, reference, spec: Spec, old_garment=None, new_garment=None, labels=None,
                   chunk_frames: int = 12) -> dict:
    """A video whose target slot switches at `spec.switch_frame` from `spec.target` (old) to
    `spec.switch_garment` (new); garment images default to the spec's renders. Colours are read from the
    garment images; the old garment's colours are those it does not share with the new one.

    - `latency` [0] (frames, 0 .. F - s): frames after the switch frame s until the new garment's colours cover
      >= 90% of the slot's garment region; F - s if never (`switched` = 0 then, else 1).
    - `leakage` [0] in [0, 1]: mean fraction of the slot's garment region showing old colours, over the frames
      from s + latency on (from s if it never switched).
    - `before_old` [1] in [0, 1]: mean fraction of the region showing old colours before s.
    - `new_share_chunk` [1] in [0, 1]: mean fraction of the region showing the new garment's colours over the
      `chunk_frames` frames from s on (one streamed chunk after the switch).
    - `continuity_ratio` [<= 1] (>= 0): position step at the switch |p_s - p_{s-1}| (p = centre x, top row) over
      (median step elsewhere + 0.5 px); `continuity` [1] = 1 / (1 + max(0, ratio - 1)) in (0, 1].
    - `identity_before`, `identity_after` [1] in [0, 1]: the ID score of the frames before / from s vs the
      reference.
    """
    if spec.switch_frame is None or spec.switch_garment is None:
        raise ValueError("switch_metrics needs a spec with switch_frame and switch_garment (spec.with_switch)")
    s, F = spec.switch_frame, spec.num_frames
    lv, lr = labels if labels is not None else _labels_of(spec, video, reference)
    scale = flat_layout(spec.target.type, spec.height, spec.width)[0]
    if old_garment is None:
        old_garment = render_garment_image(spec.target, spec.height, spec.width)[0]
    if new_garment is None:
        new_garment = render_garment_image(spec.switch_garment, spec.height, spec.width)[0]
    new_c = garment_image_features(new_garment, scale)["colours"]
    old_c = garment_image_features(old_garment, scale)["colours"] - new_c
    tr = track(lv)
    region = garment_region(lv, spec, spec.target.type, tr)
    n = region.sum((1, 2))
    frac = lambda cs: np.where(n >= MIN_REGION, (np.isin(lv, sorted(cs)) & region).sum((1, 2)) / np.maximum(n, 1),
                               0.0)
    new_frac, old_frac = frac(new_c), frac(old_c)
    shown = np.flatnonzero(new_frac[s:] >= NEW_GARMENT_SHOWN)
    latency = int(shown[0]) if len(shown) else F - s
    leak_from = s + latency if len(shown) else s
    p = np.nan_to_num(np.stack([tr.cx, tr.top], 1), nan=0.0)
    steps = np.linalg.norm(np.diff(p, axis=0), axis=1)  # steps[t - 1] = |p_t - p_{t-1}|
    others = np.delete(steps, s - 1)
    ratio = float(steps[s - 1] / (np.median(others) + 0.5)) if len(others) else 0.0
    id_before = identity_metrics(None, None, spec, labels=(lv[:s], lr))["id"]
    id_after = identity_metrics(None, None, spec, labels=(lv[s:], lr))["id"]
    return {
        "latency": float(latency), "switched": float(len(shown) > 0), "leakage": _mean(old_frac[leak_from:]),
        "before_old": _mean(old_frac[:s]), "new_share_chunk": _mean(new_frac[s:s + chunk_frames]),
        "continuity_ratio": ratio,
        "continuity": float(1 / (1 + max(0.0, ratio - 1))), "identity_before": id_before,
        "identity_after": id_after,
    }


# ---------------------------------------------------------------------------------------------------------------


def evaluate(video, spec: Spec, reference=None, garment=None, caption: str | None = None,
             ground_truth=None) -> dict:
    """Every metric of a generated `video` for `spec` (reference / garment images default to the spec's renders;
    the caption to the spec's dynamic caption), flattened as "group/name" -> float: groups id, motion, vq,
    garment, ntp. With a switch in the spec, `garment/*` covers the frames before the switch (against the first
    garment), `garment_after/*` the frames from it on (against `spec.switch_garment`'s image), and `switch/*`
    is added."""
    gt = ground_truth if ground_truth is not None else render_sample(spec)
    reference = gt.reference if reference is None else reference
    garment = gt.garment if garment is None else garment
    labels = _labels_of(spec, video, reference)
    out = {}
    groups = {
        "id": identity_metrics(video, reference, spec, labels=labels),
        "motion": motion_metrics(video, spec, caption, labels=labels[0], ground_truth=gt),
        "vq": vq_metrics(video),
        "ntp": ntp_metrics(video, reference, spec, labels=labels),
    }
    if spec.switch_frame is None:
        groups["garment"] = garment_metrics(video, garment, spec, labels=labels[0])
    else:
        s = spec.switch_frame
        groups["garment"] = garment_metrics(None, garment, spec, labels=labels[0][:s])
        groups["garment_after"] = garment_metrics(None, gt.switch_garment, spec, labels=labels[0][s:])
        groups["switch"] = switch_metrics(video, reference, spec, old_garment=garment,
                                          new_garment=gt.switch_garment, labels=labels)
    for g, d in groups.items():
        out.update({f"{g}/{k}": float(v) for k, v in d.items()})
    return out
