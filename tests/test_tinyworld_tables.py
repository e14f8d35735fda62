"""The tables' VAE-ceiling rows (`fc_jax.bench.tinyworld_tables`): the ground truth through a round trip, scored
as the generated rows are. A lossless round trip must score the switch ideally; one that keeps the old garment
(the switch's ground truth rendered wrong, or a decoder that lags) must score it worse."""

import dataclasses

import numpy as np
import pytest

from fc_jax.bench import tinyworld as bench_tinyworld
from fc_jax.bench import tinyworld_tables as T
from fc_jax.tinyworld.render import render_sample
from fc_jax.tinyworld.spec import split_specs

SWITCH, FRAMES, CHUNK = 21, 45, 12


@pytest.fixture(scope="module")
def cases():
    specs = list(split_specs("heldout", 2, height=64, width=64, num_frames=FRAMES))
    return T.switch_cases(specs, (SWITCH,))


def test_a_lossless_round_trip_scores_the_switch_ground_truth_ideally(cases, monkeypatch):
    monkeypatch.setattr(bench_tinyworld, "reconstruct", lambda params, video: video)
    row = T.switch_ceiling(None, cases, CHUNK)
    assert row["latency"] == 0 and row["switched"] == 1 and row["leakage"] <= 0.01
    assert row["new_share_chunk"] >= 0.9 and row["garment_after_hgc"] >= 0.9


def test_a_round_trip_that_keeps_the_old_garment_scores_worse(cases, monkeypatch):
    def keep_old(params, video):  # the first frames' garment held on: the switch never shows
        return np.concatenate([video[:SWITCH], np.repeat(video[SWITCH - 1:SWITCH], len(video) - SWITCH, 0)])

    monkeypatch.setattr(bench_tinyworld, "reconstruct", keep_old)
    row = T.switch_ceiling(None, cases, CHUNK)
    assert row["new_share_chunk"] < 0.5 and row["leakage"] > 0.5


def test_the_table1_ceiling_row_is_the_metrics_of_the_round_trip(cases, monkeypatch):
    specs = [dataclasses.replace(spec, num_frames=9) for spec, *_ in cases]
    truths = [render_sample(s) for s in specs]
    monkeypatch.setattr(bench_tinyworld, "reconstruct", lambda params, video: video)
    ideal = T.vae_ceiling_row(None, specs, truths)
    monkeypatch.setattr(bench_tinyworld, "reconstruct", lambda params, video: video[:, ::-1])  # mirrored
    mirrored = T.vae_ceiling_row(None, specs, truths)
    assert ideal["garment/hgc"] >= 0.9 and ideal["id/id"] >= 0.9 and "fps" not in ideal
    assert mirrored["ntp/ntp"] < ideal["ntp/ntp"]
