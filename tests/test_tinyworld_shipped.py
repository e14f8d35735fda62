"""The shipped tiny-world student (`fc_jax/tinyworld/weights`, CPU, fixed seeds) on held-out samples: issue
"the method on the tiny world", must-show 1 (a stream with a switch) and 2 (the caption's motion and the
reference's identity over 165 frames).

Each claim is tested against the stream that would show it false: the switched stream against the same stream
without the switch (the old garment kept) and against a restart (the first frames, then a fresh stream in the
new garment: what a switch that drops the motion looks like); a walk to the right against the same person's
walk to the left and standing still; the reference's identity against the other people's references.
What the shipped weights miss is asserted too, as strict expected failures (`raises=AssertionError`) whose
reasons give the measured figures: the issue's switch goals, every walk's direction over 165 frames, and the
identity over 165 frames. When retrained weights meet one, its test passes unexpectedly and fails the suite
until the mark is removed.
"""

import dataclasses
import fcntl
import functools
import glob
import hashlib
import os
import pickle

import numpy as np
import pytest

from fc_jax.bench.tinyworld_tables import TinyWorld, score_switches, switch_cases
from fc_jax.sampling.streaming import StreamingSession
from fc_jax.tinyworld import metrics
from fc_jax.tinyworld.render import render_garment_image, render_sample
from fc_jax.tinyworld.spec import Motion, full_caption
from fc_jax.tinyworld.weights import SHIPPED

SWITCH_SAMPLES, SWITCH_FRAMES, SWITCH_AT = 4, 45, 21
MOTION_SAMPLES, LONG_FRAMES = 3, 165
MISSED = dict(strict=True, raises=AssertionError)  # a strict expected failure: an unexpected pass fails the suite


@functools.cache
def _inputs_digest() -> str:
    """A hash of this file, fc_jax's sources and the shipped weights: what the cached streams depend on."""
    package = os.path.dirname(os.path.dirname(SHIPPED))
    files = [__file__] + sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)) + sorted(
        glob.glob(os.path.join(SHIPPED, "*.safetensors")))
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _once_per_session(name: str, build):
    """`build()`, computed by the first pytest-xdist worker that asks and read back by the others from the
    session's test cache folder (conftest's `FC_JAX_TEST_CACHE`), keyed by `_inputs_digest` (a cache folder kept
    between runs never serves streams of other code or weights)."""
    path = os.path.join(os.environ["FC_JAX_TEST_CACHE"], f"{name}-{_inputs_digest()}.pkl")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return pickle.load(f)
        value = build()
        with open(path + ".tmp", "wb") as f:
            pickle.dump(value, f)
        os.replace(path + ".tmp", path)
        return value


@functools.cache
def _world():
    """(the shipped weights as `TinyWorld`, a student `StreamingSession` over them), loaded once per worker."""
    tw = TinyWorld.load(None)
    session = StreamingSession(tw.configs["student"], tw.params["student"], tw.params["vae"], tw.context(""), seed=0)
    return tw, session


def _stream(session, tw, reference, garment, spec, frames, switches=None) -> np.ndarray:
    session.start(reference, garment, tw.context(full_caption(spec)))
    return np.concatenate(list(session.stream(frames, switches, progress=False)))


@pytest.fixture(scope="module")
def switch_rows():
    """{"switched" | "kept" | "restart": [score_switches row per held-out case]}."""
    return _once_per_session("switch_rows", lambda: _switch_rows(*_world()))


def _switch_rows(tw, session):
    chunk_frames = 4 * tw.configs["student"].student.chunk_frames
    rows = {"switched": [], "kept": [], "restart": []}
    for spec, reference, garment, garments, segments in switch_cases(tw.specs(SWITCH_SAMPLES, SWITCH_FRAMES),
                                                                     (SWITCH_AT,)):
        new = render_garment_image(garments[1], spec.height, spec.width)[0]
        kept = _stream(session, tw, reference, garment, spec, SWITCH_FRAMES)
        fresh = _stream(session, tw, reference, new, spec, SWITCH_FRAMES)  # a stream in the new garment from frame 0
        videos = {
            "switched": _stream(session, tw, reference, garment, spec, SWITCH_FRAMES, {SWITCH_AT: new}),
            "kept": kept,
            "restart": np.concatenate([kept[:SWITCH_AT], fresh[:SWITCH_FRAMES - SWITCH_AT]]),
        }
        for name, video in videos.items():
            rows[name] += score_switches(video, reference, garments, segments, chunk_frames)
    return rows


def _mean(rows, key) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_a_switch_shows_the_new_garment_and_keeps_the_motion(switch_rows):
    """After the switch the new garment's consistency (hgc) is higher and the old garment leaks less than in the
    same stream without the switch; the figure's jump across the switch is smaller than a restart's (means over
    the cases; the new garment's share of the slot is not compared: the VAE's blur mixes a small-period pattern's
    two colours into a third, and on one case the kept garment's blur reads as the new garment's red)."""
    switched, kept, restart = switch_rows["switched"], switch_rows["kept"], switch_rows["restart"]
    assert _mean(switched, "garment_after_hgc") > 1.5 * _mean(kept, "garment_after_hgc")
    assert _mean(switched, "leakage") < 0.6 * _mean(kept, "leakage")
    assert _mean(switched, "continuity_ratio") < 0.5 * _mean(restart, "continuity_ratio")


@pytest.mark.xfail(**MISSED, reason="goal missed by the shipped weights (run tw14, 8 held-out samples in the card): "
                   "new garment 0.36 of the slot within a chunk, leakage 0.114, jump 2.24x the typical step")
def test_a_switch_meets_the_issue_goals(switch_rows):
    """The issue's goals for the full switch: the new garment on >= 90% of the slot within one chunk, leakage
    <= 5%, the jump across the switch <= 2x the typical per-frame step."""
    switched = switch_rows["switched"]
    assert _mean(switched, "new_share_chunk") >= 0.9
    assert _mean(switched, "leakage") <= 0.05
    assert _mean(switched, "continuity_ratio") <= 2.0


@pytest.fixture(scope="module")
def long_streams():
    """Per held-out person: (spec, reference image, {motion kind: 165-frame stream}) for a slow walk left, a slow
    walk right and standing still, the same person, garment and seed."""
    return _once_per_session("long_streams", lambda: _long_streams(*_world()))


def _long_streams(tw, session):
    out = []
    for spec in tw.specs(MOTION_SAMPLES, LONG_FRAMES):
        first = render_sample(dataclasses.replace(spec, num_frames=1))
        videos = {}
        for kind, speed in (("walk_left", "slow"), ("walk_right", "slow"), ("stand", "")):
            moved = dataclasses.replace(spec, motion=Motion(kind, speed))
            videos[kind] = _stream(session, tw, first.reference, first.garment, moved, LONG_FRAMES)
        out.append((spec, first.reference, videos))
    return out


def test_the_student_reads_the_captions_direction(long_streams):
    """Per person, over the first 45 frames (the training clips' length): the walk to the right goes further right
    than the walk to the left (`motion/speed_px`, the least-squares speed of the figure's centre), and standing
    still moves less than half that difference."""
    for spec, _, videos in long_streams:
        early = dataclasses.replace(spec, num_frames=45)
        v = {kind: metrics.motion_metrics(video[:45], early)["speed_px"] for kind, video in videos.items()}
        assert v["walk_right"] > v["walk_left"], (spec.seed, v)
        assert abs(v["stand"]) < 0.5 * (v["walk_right"] - v["walk_left"]), (spec.seed, v)


@pytest.mark.xfail(**MISSED, reason="missed by the shipped weights (run tw14): after about 45 frames the walks "
                   "stall, over 165 frames their speeds are under 0.08 px / frame and some go the wrong way")
def test_every_walk_goes_its_captions_way_over_165_frames(long_streams):
    """`motion/direction_ok` (the caption's way at a quarter of the slow walking speed or more, the figure kept)
    for every walk over the whole 165 frames."""
    for spec, _, videos in long_streams:
        for kind in ("walk_left", "walk_right"):
            moved = dataclasses.replace(spec, motion=Motion(kind, "slow"), num_frames=LONG_FRAMES)
            assert metrics.motion_metrics(videos[kind], moved)["direction_ok"] == 1.0, (spec.seed, kind)


@pytest.mark.xfail(**MISSED, reason="missed by the shipped weights (run tw14): the ID score of a stream against "
                   "another person's reference is often higher than against its own (0.54 against 0.43 for the "
                   "first person standing)")
def test_the_student_keeps_the_references_identity_over_165_frames(long_streams):
    """Every stream's ID score against its own reference beats its score against every other held-out person's
    reference, over all 165 frames and over the last 45."""
    for i, (spec, reference, videos) in enumerate(long_streams):
        others = [r for j, (_, r, _) in enumerate(long_streams) if j != i]
        for kind, video in videos.items():
            for frames in (video, video[-45:]):
                own = metrics.identity_metrics(frames, reference, spec)["id"]
                wrong = max(metrics.identity_metrics(frames, other, spec)["id"] for other in others)
                assert own > wrong, (spec.seed, kind, len(frames), own, wrong)
