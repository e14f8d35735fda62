"""The tiny world: separable palettes, a deterministic renderer whose masks are its pixels, captions that say what
the figure does, the garment mismatch of every triplet, disjoint splits with a truly held-out split, and records
in exactly the curation format (written and read back through `fc_jax.data.triplets`)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os

import numpy as np
import pytest

from fc_jax.data import pipeline, triplets
from fc_jax.tinyworld import dataset, render, spec as S, world as W


def _find(pred, limit=2000, **kw):
    """The first spec (by seed) satisfying pred."""
    for seed in range(limit):
        sp = S.sample_spec(seed, **kw)
        if pred(sp):
            return sp
    raise AssertionError("no seed satisfies the predicate")


@pytest.fixture(scope="module")
def specs():
    """One spec per motion (speeds too) and per garment type, plus one of each pattern."""
    out = [_find(lambda s, m=m: (s.motion.kind, s.motion.speed) == m) for m in
           [("walk_left", "slow"), ("walk_right", "fast"), ("arm_swing", ""), ("turn", ""), ("jump", ""),
            ("stand", "")]]
    out += [_find(lambda s, t=t: s.target.type == t) for t in W.GARMENT_TYPES]
    out += [_find(lambda s, p=p: s.target.pattern == p) for p in W.PATTERNS]
    return list({s.seed: s for s in out}.values())


@pytest.fixture(scope="module")
def samples(specs):
    return [render.render_sample(s) for s in specs]


def _dist(a, b):
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def test_palettes_are_separable():
    figure = list(W.SKIN_TONES.values()) + list(W.HAIR_COLOURS.values()) + list(W.GARMENT_COLOURS.values())
    assert min(_dist(a, b) for a, b in itertools.combinations(figure, 2)) >= 60
    # Every background colour: walls, every point of every gradient, objects.
    segments = W.gradient_segments()
    ts = np.linspace(0, 1, 51)[:, None]
    background = [a * (1 - ts) + b * ts for a, b in segments] + [np.array(list(W.OBJECT_COLOURS.values()))]
    background = np.concatenate(background)
    assert min(_dist(c, f) for c in background for f in figure) >= 60
    # Garments are never near white, so a garment laid flat on white segments exactly.
    assert min(_dist(c, W.WHITE) for c in W.GARMENT_COLOURS.values()) >= 100
    assert 8 <= len(W.GARMENT_COLOURS) <= 10


def test_render_is_deterministic_and_seeds_differ():
    a, b = render.render_sample(S.sample_spec(11)), render.render_sample(S.sample_spec(11))
    for name in ("video", "reference", "garment", "parts", "reference_parts", "garment_mask"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.static_caption == b.static_caption and a.dynamic_caption == b.dynamic_caption
    c = render.render_sample(S.sample_spec(12))
    assert a.video.tobytes() != c.video.tobytes() and S.sample_spec(11) != S.sample_spec(12)


def test_shapes_dtypes_and_geometry(samples):
    for smp in samples:
        assert smp.video.shape == (45, 160, 128, 3) and smp.video.dtype == np.uint8
        assert smp.reference.shape == smp.garment.shape == (160, 128, 3)
        assert smp.parts.shape == (45, 160, 128)
        assert set(smp.pose) == {"cx", "cy", "top", "facing", "arm_angle", "leg_angle", "jump"}
        assert all(v.shape == (45,) for v in smp.pose.values())
    # The whole figure stays in the frame, also for the widest people and motions: nothing touches the left,
    # right or top border.
    wide = [_find(lambda s, m=m: s.person.height == "tall" and s.person.build == "broad" and s.motion.kind == m
                  and s.motion.speed in ("", "fast")) for m in ("arm_swing", "jump", "walk_left", "walk_right")]
    for smp in samples + [render.render_sample(s) for s in wide]:
        fg = smp.parts > 0
        assert not fg[:, :, 0].any() and not fg[:, :, -1].any() and not fg[:, 0].any(), smp.spec.seed
    other = render.render_sample(S.sample_spec(3, height=192, width=144, num_frames=21))
    assert other.video.shape == (21, 192, 144, 3)


def test_masks_are_the_pixels(samples):
    for smp in samples:
        sp = smp.spec
        for video, parts, garment in ((smp.video, smp.parts, sp.target),
                                      (smp.reference[None], smp.reference_parts[None], sp.reference_garment)):
            m = render.part_masks(parts, sp.target.type)
            total = sum(v.astype(int) for v in m.values())
            assert (total == 1).all(), "the masks partition every frame"
            assert (video[m["skin"]] == W.SKIN_TONES[sp.person.skin]).all()
            assert (video[m["hair"]] == W.HAIR_COLOURS[sp.person.hair_colour]).all()
            bg = render.render_background(sp)
            assert (video[m["background"]] == np.broadcast_to(bg, video.shape)[m["background"]]).all()
            colours = {tuple(c) for c in np.unique(video[m["garment"]], axis=0)}
            assert colours == {W.GARMENT_COLOURS[c] for c in garment.colours}, (sp.seed, colours)
            if sp.other is None:
                assert not m["other_garment"].any()
            else:
                got = {tuple(c) for c in np.unique(video[m["other_garment"]], axis=0)}
                assert got == {W.GARMENT_COLOURS[c] for c in sp.other.colours}
        # The garment image: its mask is the non-white pixels, in exactly the target's colours.
        assert (smp.garment[~smp.garment_mask] == 255).all()
        got = {tuple(c) for c in np.unique(smp.garment[smp.garment_mask], axis=0)}
        assert got == {W.GARMENT_COLOURS[c] for c in sp.target.colours}


def test_reference_is_frame_zero_in_a_different_garment(samples):
    for smp in samples:
        sp = smp.spec
        assert sp.reference_garment.type == sp.target.type and S.mismatched(sp.reference_garment, sp.target)
        # Same person, same pose: outside the target slot, frame 0 and the reference are the same pixels.
        slot = smp.masks["garment"][0]
        assert (smp.reference_masks["garment"] == slot).all()
        assert (smp.reference[~slot] == smp.video[0][~slot]).all()
        assert (smp.reference[slot] != smp.video[0][slot]).any(axis=-1).mean() > 0.2
    for seed in range(300):  # the mismatch holds for every spec, not just the rendered ones
        sp = S.sample_spec(seed)
        assert S.mismatched(sp.reference_garment, sp.target) and sp.reference_garment.type == sp.target.type
        if sp.other is not None:
            assert not sp.other.colours & (sp.target.colours | sp.reference_garment.colours)
            assert {sp.target.type, sp.other.type} == {"upper", "lower"}


def test_pattern_period_in_garment_image_is_scaled_body_period():
    sp = _find(lambda s: s.target.pattern == "hstripes" and s.target.type == "upper")
    smp = render.render_sample(sp)
    P = W.scaled_period(sp.target.period, 160)
    col = smp.garment[:, 64]
    inside = smp.garment_mask[:, 64]
    is_pattern = (col == W.GARMENT_COLOURS[sp.target.pattern_colour]).all(-1)[inside]
    runs = np.diff(np.flatnonzero(np.diff(is_pattern.astype(int)) != 0))
    assert len(runs) >= 2 and (runs == P * smp.flat_scale // 2).all()
    assert smp.flat_scale >= 2  # fitted to the frame like curation's fit_pad


def test_captions_say_the_motion(samples):
    for kind, speed in [(m, s) for m in W.MOTIONS for s in (W.SPEEDS if m.startswith("walk") else ("",))]:
        motion = S.Motion(kind, speed)
        assert S.parse_dynamic_caption(S.dynamic_caption(motion)) == motion
    with pytest.raises(ValueError):
        S.parse_dynamic_caption("the person reads a book")
    speeds = {}
    for smp in samples:
        sp, pose = smp.spec, smp.pose
        m = S.parse_dynamic_caption(smp.dynamic_caption)
        assert m == sp.motion
        dx = np.diff(pose["cx"])
        if m.kind.startswith("walk"):
            assert (np.sign(dx) == (1 if m.kind == "walk_right" else -1)).all()
            speeds[m.speed] = abs(dx.mean())
        else:
            assert np.allclose(dx, 0)
        if m.kind == "jump":
            assert pose["jump"].max() >= 0.07 * sp.height and pose["jump"].min() == 0
        else:
            assert np.all(pose["jump"] == 0)
        if m.kind == "turn":
            assert np.ptp(np.unwrap(pose["facing"])) > 1.9 * np.pi
        if m.kind == "arm_swing":
            assert np.ptp(pose["arm_angle"]) > 60
        if m.kind == "stand":
            assert all(np.ptp(v) == 0 for v in pose.values())
            assert (smp.video == smp.video[0]).all()
        # The static caption describes the video's person and garment.
        cap = smp.static_caption
        assert sp.target.colour in cap and W.GARMENT_WORDS[sp.target.type] in cap
        assert sp.person.hair_colour in cap and f"{sp.person.skin} skin" in cap
        if sp.target.pattern != "solid":
            assert W.PATTERN_WORDS[sp.target.pattern] in cap and sp.target.pattern_colour in cap
    assert speeds["fast"] > 2 * speeds["slow"]


def test_splits_are_disjoint_and_heldout_is_unseen():
    n = 60
    by_split = {split: list(S.split_specs(split, n)) for split in S.SPLITS}
    seeds = {split: {s.seed for s in v} for split, v in by_split.items()}
    for a, b in itertools.combinations(S.SPLITS, 2):
        assert not seeds[a] & seeds[b], (a, b)
    for split, specs in by_split.items():
        assert len(specs) == n and all(S.split_of(s) == split for s in specs)
        assert all(S.split_of(S.sample_spec(s.seed)) == split for s in specs)  # a function of the seed
    # Training never shows a held-out colour-pattern pair or combination; scan many more training specs.
    train = list(S.split_specs("train", 600))
    pairs = {(g.colour, g.pattern) for s in train for g in s.garments}
    combos = {(s.person.hair_style, s.target.type, s.motion.kind) for s in train}
    assert not pairs & W.HELD_OUT_PAIRS and not combos & W.HELD_OUT_COMBOS
    # ... while each held-out pair's colour and pattern, and each combination's parts, are seen on their own.
    colours, patterns = {c for c, _ in pairs}, {p for _, p in pairs}
    assert all(c in colours and p in patterns for c, p in W.HELD_OUT_PAIRS)
    for h, t, m in W.HELD_OUT_COMBOS:
        assert any(c[0] == h for c in combos) and any(c[1] == t for c in combos) and any(c[2] == m for c in combos)
    # The held-out split holds both kinds of novelty.
    held = by_split["heldout"]
    assert any(any((g.colour, g.pattern) in W.HELD_OUT_PAIRS for g in s.garments) for s in held)
    assert any((s.person.hair_style, s.target.type, s.motion.kind) in W.HELD_OUT_COMBOS for s in held)
    # A switch garment counts too.
    sp = S.split_specs("train", 1).__next__()
    g = dataclasses.replace(sp.target, **dict(zip(("colour", "pattern"), next(iter(W.HELD_OUT_PAIRS)))),
                            pattern_colour="red" if next(iter(W.HELD_OUT_PAIRS))[0] != "red" else "blue")
    assert S.split_of(S.with_switch(sp, 10, g)) == "heldout"


def test_spec_json_round_trip():
    for seed in range(40):
        sp = S.sample_spec(seed)
        assert S.spec_from_json(S.spec_to_json(sp)) == sp
    sw = S.with_switch(S.sample_spec(5), 12)
    assert S.spec_from_json(S.spec_to_json(sw)) == sw
    assert sw.switch_garment.type == sw.target.type and not sw.switch_garment.colours & sw.target.colours


def test_example_matches_curation_format():
    smp = render.render_sample(S.sample_spec(4))
    ex = dataset.to_example(smp)
    assert set(ex) == set(triplets.TEXT_FIELDS) | {"video", "reference", "garment"}
    assert all(isinstance(ex[k], str) for k in triplets.TEXT_FIELDS)
    assert ex["video"].dtype == ex["reference"].dtype == ex["garment"].dtype == np.uint8
    assert ex["garment_type"] in ("upper", "lower", "dress")  # the curation pipeline's vocabulary
    source = json.loads(ex["source"])
    assert source["split"] == S.split_of(smp.spec) and len(source["pose"]["cx"]) == 45
    gt = dataset.ground_truth(ex)
    assert gt.video.tobytes() == ex["video"].tobytes() and (gt.parts == smp.parts).all()


def test_write_and_read_back(tmp_path):
    counts = {"train": 2, "eval": 1, "heldout": 1}
    builder = dataset.write_tinyworld(str(tmp_path / "tw"), counts, height=64, width=64, num_frames=5,
                                      masks_dir=str(tmp_path / "masks"))
    builder = triplets.open_builder("triplets", str(tmp_path / "tw"))
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == counts
    for split in counts:
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            rec = source[i]
            sp = dataset.spec_of(rec["source"])
            assert S.split_of(sp) == split
            gt = render.render_sample(sp)
            assert (rec["video"] == gt.video).all() and (rec["reference"] == gt.reference).all()
            assert (rec["garment"] == gt.garment).all()
            text = lambda k: rec[k].decode() if isinstance(rec[k], bytes) else str(rec[k])
            assert text("static_caption") == gt.static_caption and text("garment_type") == sp.target.type
            masks = np.load(tmp_path / "masks" / split / f"{text('id')}.npz")
            assert (masks["parts"] == gt.parts).all()
    # The training input pipeline reads it as it reads curated data.
    data, _ = pipeline.triplet_pipeline(builder, "train", num_frames=5, height=64, width=64, batch_size=2,
                                        num_threads=1, prefetch=1)
    batch = next(iter(data))
    assert batch["video"].shape[:2] == (2, 5) and batch["garment"].shape[1:] == (64, 64, 3)
    with pytest.raises(ValueError, match="unknown splits"):
        dataset.write_tinyworld(str(tmp_path / "bad"), {"validation": 1})


def test_command_line(tmp_path, capsys):
    from fc_jax.tinyworld.__main__ import main

    main(["look", f"--out={tmp_path}", "--seeds=3,4", "--num_frames=5"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [os.path.basename(x["png"]) for x in lines] == ["seed3.png", "seed4.png"]
    assert all(os.path.getsize(x["png"]) > 0 for x in lines)
    with pytest.raises(SystemExit) as e:
        main(["write"])
    assert e.value.code == 2 and "--data_dir" in capsys.readouterr().err


def test_demo_case_is_a_held_out_walk_in_a_top_with_a_colour_disjoint_switch():
    from fc_jax.generate import builtin_switch_frame
    from fc_jax.tinyworld.demo import demo_case, score
    from fc_jax.tinyworld.spec import dynamic_caption, is_held_out, static_caption

    # the switch falls on a chunk boundary (the first chunk is 9 frames, later ones 12) near the middle
    assert [builtin_switch_frame(f) for f in (9, 21, 45, 93, 165)] == [None, 9, 21, 45, 81]
    case = demo_case(93, 45)
    spec = case.spec
    assert is_held_out(spec) and spec.motion.kind.startswith("walk") and spec.target.type == "upper"
    assert spec.switch_frame == 45 and not (spec.switch_garment.colours & spec.target.colours)
    assert case.caption == f"{dynamic_caption(spec)} {static_caption(spec)}"
    assert case.truth.video.shape == (93, spec.height, spec.width, 3)
    # the ground truth scores the switch as done at once, without leakage
    m = score(case.truth.video, case)
    assert m["switch/latency"] == 0 and m["switch/leakage"] <= 0.01 and m["garment_after/hgc"] >= 0.9
    with pytest.raises(ValueError, match="93 frames long"):
        score(case.truth.video[:45], case)
