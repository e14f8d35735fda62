"""Tiny-world metrics, calibrated: the ground-truth video scores each metric's ideal (within the tolerance its
docstring states) and each corruption a metric is meant to catch scores measurably worse. No expected value here
comes from the code under test: only ideal values, known facts of the world (e.g. a switch delayed by 6 frames
has a latency of 6) and ideal-vs-corrupted relations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fc_jax.tinyworld import metrics as M, render, spec as S, world as W

SWITCH = 20


def _find(pred, limit=3000):
    for seed in range(limit):
        sp = S.sample_spec(seed)
        if pred(sp):
            return sp
    raise AssertionError("no seed satisfies the predicate")


def _motion(kind, speed="", **kw):
    return _find(lambda s: (s.motion.kind, s.motion.speed) == (kind, speed)
                 and all(getattr(s.target, k) == v for k, v in kw.items()))


@pytest.fixture(scope="module")
def cases():
    """Rendered ground truth covering every motion, garment type and pattern."""
    specs = [
        _motion("walk_right", "slow", type="upper", pattern="hstripes"),
        _motion("walk_left", "fast", type="lower", pattern="checks"),
        _motion("arm_swing", type="dress", pattern="dots"),
        _motion("turn", type="upper", pattern="vstripes"),
        _motion("jump", type="lower", pattern="solid"),
        _motion("stand", type="dress", pattern="hstripes"),
    ]
    return {s.motion.kind: render.render_sample(s) for s in specs}


def _rerender(sample, **changes):
    return render.render_sample(dataclasses.replace(sample.spec, **changes))


def _other(options, current):
    return next(o for o in options if o != current)


# ---------------------------------------------------------------------------------------------------------------
# Ground truth scores the ideal.


def test_ground_truth_scores_ideal(cases):
    for kind, g in cases.items():
        m = M.evaluate(g.video, g.spec, ground_truth=g)
        where = f"{kind} (seed {g.spec.seed})"
        for k in ("id/skin", "id/hair_colour", "ntp/background", "ntp/other_garment", "ntp/skin", "ntp/hair",
                  "motion/amp_score", "motion/smoo_score", "garment/pattern_kind", "garment/pattern_orientation"):
            assert m[k] == pytest.approx(1.0, abs=1e-9), (where, k, m[k])
        for k in ("id/hair_region", "id/height", "id/id", "motion/motion_alignment", "garment/colour",
                  "garment/type", "garment/hgc", "ntp/ntp"):
            assert m[k] >= 0.9, (where, k, m[k])
        assert m["garment/pattern_period"] >= 0.75 and m["garment/lgc"] >= 0.85, (where, m)
        assert m["vq/vq"] >= 0.999, where
        for k, v in m.items():
            if not k.endswith(("_px", "amp", "amp_gt")):
                assert 0.0 <= v <= 1.0 + 1e-9, (where, k, v)


# ---------------------------------------------------------------------------------------------------------------
# Garment consistency.


def test_wrong_garment_colour_pattern_period_and_type(cases):
    g = cases["walk_right"]  # an upper garment with horizontal stripes
    t = g.spec.target
    gm = lambda v: M.garment_metrics(v, g.garment, g.spec)
    ideal = gm(g.video)
    wrong_colour = _other([c for c in W.GARMENT_COLOURS if c not in t.colours and
                           c not in g.spec.other.colours], t.colour)
    bad = gm(_rerender(g, target=dataclasses.replace(t, colour=wrong_colour)).video)
    assert bad["colour"] < ideal["colour"] - 0.4 and bad["hgc"] < ideal["hgc"] - 0.2
    for pattern in ("vstripes", "dots", "checks", "solid"):
        bad = gm(_rerender(g, target=dataclasses.replace(t, pattern=pattern)).video)
        assert bad["pattern_kind"] < ideal["pattern_kind"] - 0.5, pattern
        assert bad["lgc"] < ideal["lgc"] - 0.2, pattern
    bad = gm(_rerender(g, target=dataclasses.replace(t, pattern="vstripes")).video)
    assert bad["pattern_orientation"] < ideal["pattern_orientation"] - 0.5
    bad = gm(_rerender(g, target=dataclasses.replace(t, period=_other(W.PERIODS, t.period))).video)
    assert bad["pattern_period"] < ideal["pattern_period"] - 0.2
    # The right colours on the wrong garment: the top's pattern drawn as a dress.
    dress = dataclasses.replace(g.spec, target=dataclasses.replace(t, type="dress"), other=None,
                                reference_garment=dataclasses.replace(g.spec.reference_garment, type="dress"))
    bad = gm(render.render_sample(dress).video)
    assert bad["type"] < ideal["type"] - 0.1


def test_garment_image_is_read_from_its_pixels(cases):
    for g in cases.values():
        assert M.garment_type_from_image(g.garment) == g.spec.target.type
        f = M.garment_image_features(g.garment, g.flat_scale)
        t = g.spec.target
        assert f["kind"] == t.pattern
        assert {W.FIGURE_NAMES[i].split(":")[1] for i in f["colours"]} == set(t.colours)
        if t.pattern != "solid":
            assert f["period"] == pytest.approx(W.scaled_period(t.period, g.spec.height), rel=0.1)


# ---------------------------------------------------------------------------------------------------------------
# Motion.


def test_motion_corruptions(cases):
    for kind, g in cases.items():
        mm = lambda v, cap=None: M.motion_metrics(v, g.spec, caption=cap, ground_truth=g)
        ideal = mm(g.video)
        frozen = mm(np.repeat(g.video[:1], len(g.video), 0))
        if kind != "stand":
            assert frozen["motion_alignment"] < ideal["motion_alignment"] - 0.5, kind
            assert frozen["amp_score"] < 0.5 and frozen["amp"] == 0.0, kind
        rng = np.random.default_rng(0)
        shuffled = mm(g.video[rng.permutation(len(g.video))])
        if kind != "stand":
            assert shuffled["smoo"] < ideal["smoo"] - 0.1 and shuffled["smoo_score"] < 0.9, kind
        if kind in ("walk_right", "walk_left", "turn"):  # reversal is visible for motions with a direction
            assert mm(g.video[::-1])["motion_alignment"] < ideal["motion_alignment"] - 0.5, kind
        if kind == "stand":  # any motion breaks standing still
            for other in (S.Motion("arm_swing"), S.Motion("walk_left", "slow"), S.Motion("turn")):
                moving = mm(_rerender(g, motion=other).video)
                assert moving["motion_alignment"] < 0.7 and moving["amp_score"] < 0.5, other
    # The caption decides: a slow walk judged against "quickly", a walk judged against "jumps", "stands still".
    g = cases["walk_right"]
    ideal = M.motion_metrics(g.video, g.spec, ground_truth=g)["motion_alignment"]
    for caption in ("the person walks to the right quickly", "the person walks to the left slowly",
                    "the person jumps up and down in place", "the person stands still"):
        assert M.motion_metrics(g.video, g.spec, caption=caption, ground_truth=g)["motion_alignment"] < ideal - 0.3


def test_motion_measures_speed_and_bounce(cases):
    g = cases["walk_left"]
    m = M.motion_metrics(g.video, g.spec, ground_truth=g)
    assert m["speed_px"] == pytest.approx(m["expected_speed_px"], rel=0.1) and m["speed_px"] < 0
    j = cases["jump"]
    m = M.motion_metrics(j.video, j.spec, ground_truth=j)
    assert m["bounce_px"] == pytest.approx(W.JUMP_HEIGHT * j.spec.height, abs=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Identity and non-target preservation.


def test_identity_corruptions(cases):
    for kind in ("walk_right", "turn", "stand"):
        g = cases[kind]
        p = g.spec.person
        idm = lambda v: M.identity_metrics(v, g.reference, g.spec)
        ideal = idm(g.video)
        for attr, key in (("skin", "skin"), ("hair_colour", "hair_colour")):
            options = W.SKIN_TONES if attr == "skin" else W.HAIR_COLOURS
            bad = idm(render.render_sample(render.with_person(g.spec, **{attr: _other(options, getattr(p, attr))}))
                      .video)
            assert bad[key] < ideal[key] - 0.5 and bad["id"] < ideal["id"] - 0.1, (kind, attr)
        style = "long" if p.hair_style != "long" else "short"
        bad = idm(render.render_sample(render.with_person(g.spec, hair_style=style)).video)
        assert bad["hair_region"] < ideal["hair_region"] - 0.2, kind
        height = "short" if p.height != "short" else "tall"
        bad = idm(render.render_sample(render.with_person(g.spec, height=height)).video)
        assert bad["height"] < ideal["height"] - 0.15, kind


def test_ntp_corruptions(cases):
    for kind in ("walk_right", "jump", "stand"):
        g = cases[kind]
        ntp = lambda v: M.ntp_metrics(v, g.reference, g.spec)
        ideal = ntp(g.video)
        bg = g.spec.background
        other_wall = _other([c for c in W.WALL_COLOURS if c not in (bg.top, bg.bottom)], None)
        changed = _rerender(g, background=dataclasses.replace(bg, top=other_wall, bottom=other_wall)).video
        assert ntp(changed)["background"] < ideal["background"] - 0.5, kind
        assert ntp(changed)["ntp"] < ideal["ntp"] - 0.1, kind
        skin = render.render_sample(render.with_person(g.spec, skin=_other(W.SKIN_TONES, g.spec.person.skin)))
        assert ntp(skin.video)["skin"] < ideal["skin"] - 0.5
        if g.spec.other is not None:  # the other garment changes (the target stays)
            o = g.spec.other
            colour = _other([c for c in W.GARMENT_COLOURS
                             if c not in o.colours | g.spec.target.colours], None)
            bad = ntp(_rerender(g, other=dataclasses.replace(o, colour=colour)).video)
            assert bad["other_garment"] < ideal["other_garment"] - 0.4, kind
        # Noise does not change what is preserved.
        noisy = np.clip(g.video + np.random.default_rng(1).normal(0, 6, g.video.shape), 0, 255)
        assert ntp(noisy)["ntp"] >= ideal["ntp"] - 0.05


# ---------------------------------------------------------------------------------------------------------------
# VQ.


def _blur(video):
    v = video.astype(np.float32)
    pad = np.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(pad[:, dy:dy + v.shape[1], dx:dx + v.shape[2]] for dy in range(3) for dx in range(3)) / 9


def test_vq_clean_blurred_noised(cases):
    g = cases["arm_swing"]
    frames = g.video[::8]
    clean = M.vq_score(frames)
    assert (clean >= 0.999).all()
    assert (M.vq_score(frames.astype(np.float32)) == pytest.approx(clean, abs=1e-9))
    blurred = M.vq_score(_blur(frames))
    noisy = M.vq_score(np.clip(frames + np.random.default_rng(0).normal(0, 8, frames.shape), 0, 255))
    heavy = M.vq_score(np.clip(frames + np.random.default_rng(0).normal(0, 20, frames.shape), 0, 255))
    assert (blurred < clean - 0.02).all() and (noisy < clean - 0.1).all() and (heavy < noisy - 0.1).all()
    assert M.vq_score(g.garment)[0] >= 1 - 1e-5  # garment images (white, palette colours) are exact


def test_vq_jax_agrees_and_is_differentiable(cases):
    import jax
    import jax.numpy as jnp

    g = cases["turn"]
    frames = np.concatenate([g.video[:2], _blur(g.video[2:4]).round().astype(np.uint8),
                             np.clip(g.video[4:6] + np.random.default_rng(0).normal(0, 8, g.video[4:6].shape), 0,
                                     255).round().astype(np.uint8)])
    frames = frames[:, 30:130, 14:114]  # the figure and some background
    model = frames.astype(np.float32) / 127.5 - 1.0
    vq = jax.jit(M.vq_score_jax)
    got = np.asarray(vq(model))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, M.vq_score(frames), atol=1e-5)
    np.testing.assert_allclose(got, M.vq_score(M.from_model_range(model)), atol=1e-5)
    grad = jax.jit(jax.grad(lambda x: M.vq_score_jax(x).sum()))(jnp.asarray(model[4:6]))
    assert bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).max()) > 0
    # A gradient step moves noisy frames toward the palette.
    stepped = jnp.clip(jnp.asarray(model[4:6]) + 0.5 * grad / jnp.abs(grad).max() * 0.02, -1, 1)
    assert (np.asarray(vq(stepped)) > got[4:6]).all()
    with pytest.raises(ValueError, match="from_model_range"):
        M.vq_score(model)


def test_classification_is_exact_nearest_colour():
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 255, (50000, 3)).astype(np.float32)
    px[:1000] = W.FIGURE_RGB[rng.integers(0, len(W.FIGURE_RGB), 1000)] + rng.uniform(-3, 3, (1000, 3))
    d2 = ((px[:, None] - W.FIGURE_RGB[None]) ** 2).sum(-1)
    assert (M._nearest_figure(px) == d2.argmin(1)).all()


# ---------------------------------------------------------------------------------------------------------------
# Switching.


@pytest.fixture(scope="module")
def switch_case():
    sp = S.with_switch(_motion("walk_right", "slow", type="upper"), SWITCH)
    g = render.render_sample(sp)
    unswitched = render.render_sample(dataclasses.replace(sp, switch_frame=None, switch_garment=None))
    return g, unswitched


def test_switch_clean_vs_delayed_vs_leaky_vs_jump(switch_case):
    g, old = switch_case
    sw = lambda v: M.switch_metrics(v, g.reference, g.spec)
    clean = sw(g.video)
    assert clean["latency"] == 0 and clean["switched"] == 1 and clean["leakage"] <= 0.01
    assert clean["before_old"] >= 0.95 and clean["continuity"] == 1.0 and clean["continuity_ratio"] <= 1.0
    assert clean["identity_before"] >= 0.95 and clean["identity_after"] >= 0.95
    full = M.evaluate(g.video, g.spec, ground_truth=g)
    assert full["switch/latency"] == 0 and full["garment/hgc"] >= 0.9 and full["garment_after/hgc"] >= 0.9
    assert M.evaluate(old.video, g.spec, ground_truth=g)["garment_after/hgc"] < full["garment_after/hgc"] - 0.3
    # Delayed: the old garment stays 6 more frames.
    delayed = g.video.copy()
    delayed[SWITCH:SWITCH + 6] = old.video[SWITCH:SWITCH + 6]
    assert sw(delayed)["latency"] == 6
    assert clean["new_share_chunk"] >= 0.9 and sw(delayed)["new_share_chunk"] < clean["new_share_chunk"] - 0.3
    never = sw(old.video)
    assert never["switched"] == 0 and never["latency"] == len(g.video) - SWITCH and never["leakage"] >= 0.95
    assert never["new_share_chunk"] <= 0.05
    # Leaky: a third of the garment's rows keep the old garment after the switch.
    leaky = g.video.copy()
    rows = (np.arange(g.spec.height) % 3 == 0)[None, :, None]
    keep = g.masks["garment"][SWITCH:] & rows
    leaky[SWITCH:][keep] = old.video[SWITCH:][keep]
    bad = sw(leaky)
    assert bad["leakage"] > clean["leakage"] + 0.2 and bad["latency"] > clean["latency"]
    # A blend of old and new colours is neither: the new garment never shows cleanly.
    blend = g.video.copy()
    m = g.masks["garment"][SWITCH:]
    blend[SWITCH:][m] = ((0.5 * g.video[SWITCH:][m] + 0.5 * old.video[SWITCH:][m])).astype(np.uint8)
    assert sw(blend)["latency"] > clean["latency"]
    # A jump in position at the switch.
    shifted = _rerender(g, x0=g.spec.x0 + 12)
    jump = np.concatenate([g.video[:SWITCH], shifted.video[SWITCH:]])
    bad = sw(jump)
    assert bad["continuity_ratio"] > 3 * max(clean["continuity_ratio"], 1.0) and bad["continuity"] < 0.5
    # Identity lost across the switch.
    other = render.render_sample(render.with_person(g.spec, skin=_other(W.SKIN_TONES, g.spec.person.skin),
                                                    hair_colour=_other(W.HAIR_COLOURS, g.spec.person.hair_colour)))
    bad = sw(np.concatenate([g.video[:SWITCH], other.video[SWITCH:]]))
    assert bad["identity_after"] < clean["identity_after"] - 0.3
    assert bad["identity_before"] == pytest.approx(clean["identity_before"])


def test_switch_needs_a_switch_spec(cases):
    g = cases["stand"]
    with pytest.raises(ValueError, match="switch"):
        M.switch_metrics(g.video, g.reference, g.spec)
    with pytest.raises(ValueError, match="garment type"):
        S.with_switch(g.spec, 10, dataclasses.replace(g.spec.target, type="upper"))
