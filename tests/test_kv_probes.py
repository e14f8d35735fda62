"""Attention probes: the masses of the cached chunk forward equal those of a dense softmax over the full
block-causal forward's queries and keys (a different code path: no cache, the window as a mask), per region."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import flow
from fc_jax import kv_cache as kvc
from fc_jax import kv_probes
from fc_jax.models.attention import streaming_layout

H, W, TPF = 4, 6, 6  # latent grid -> 2 x 3 = 6 tokens per frame


@pytest.fixture(scope="module")
def setup(tiny_dit):
    config, model, params = tiny_dit
    keys = jax.random.split(jax.random.key(7), 6)
    lat = lambda k, f: jax.random.normal(k, (1, f, H, W, 48))
    d = dict(reference=lat(keys[0], 1), garment=lat(keys[1], 1), chunks=lat(keys[2], 21), noise=lat(keys[3], 3),
             context=jax.random.normal(keys[4], (1, 16, 32)))
    return model, params, d


def _stream(model, params, d, spec, num_chunks):
    ops = kvc.Ops(model)
    cache = ops.prefill(params, kvc.init_cache(model, spec, 1, H, W), d["reference"], d["garment"], d["context"])
    for i in range(num_chunks):
        cache = ops.commit(params, cache, d["chunks"][:, 3 * i : 3 * i + 3])
    return cache


def _dense_masses(model, params, d, num_chunks, x_t, t, layout, frame_regions):
    """Per layer and head, the mass of the last chunk's queries on each named region, from the full forward over
    [reference, garment, chunks 0..n-1, x_t]: its sown queries and returned keys, a dense masked softmax.
    frame_regions: the region name of every frame of that sequence."""
    video = jnp.concatenate([d["reference"], d["garment"], d["chunks"][:, : 3 * num_chunks], x_t], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((1, 2 + 3 * num_chunks)), jnp.full((1, 3), t)], axis=1)
    (_, kv), state = model.apply({"params": params}, video, timesteps, d["context"], np.arange(video.shape[1]),
                                 layout, return_kv=True, mutable=["intermediates"])
    q = np.asarray(state["intermediates"]["blocks"]["block"]["self_attn"]["queries"][0], np.float64)
    k = np.asarray(kv["k"], np.float64)  # [L, B, S, N, H]
    rows = slice(q.shape[2] - 3 * TPF, q.shape[2])
    logits = np.einsum("lbtnh,lbsnh->lbnts", q[:, :, rows], k) / np.sqrt(q.shape[-1])
    logits = np.where(layout.dense()[rows][None, None, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).mean(axis=3)  # [L, B, N, S]
    token_regions = np.repeat(np.asarray(frame_regions), TPF)
    return {name: p[..., token_regions == name].sum(-1) for name in set(frame_regions)}


@pytest.mark.parametrize("num_chunks", [2, 6])
def test_probes_sum_to_one_and_equal_a_dense_reference(setup, num_chunks):
    model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)  # history 3 chunks: sink 1 + ring of 2
    cache = _stream(model, params, d, spec, num_chunks)
    t = 625.0
    x_t = flow.add_noise(d["chunks"][:, 3 * num_chunks : 3 * num_chunks + 3], d["noise"], jnp.array([t]))
    probes = jax.jit(kv_probes.probe, static_argnums=0)(model, params, cache, x_t, t)
    assert probes.regions == ("reference", "garment", "sink", "history_1", "history_2", "chunk")
    assert probes.mass.shape == (model.cfg.num_layers, 1, model.cfg.num_heads, 6)
    np.testing.assert_allclose(np.asarray(probes.mass).sum(-1), 1.0, atol=1e-5)

    if num_chunks == 2:  # filling: chunk 0 is the sink, chunk 1 the newest history, history_2 still empty
        layout = streaming_layout(3, 3, TPF)
        chunk_regions = ["sink", "history_1"]
    else:  # six commits through a sink + 2 ring: chunk 6 sees c0 (sink), c5 (age 1), c4 (age 2)
        layout = streaming_layout(7, 3, TPF, sink_chunks=1, window_chunks=2)
        chunk_regions = ["sink", "none", "none", "none", "history_2", "history_1"]
    frames = ["reference", "garment"] + [r for r in chunk_regions for _ in range(3)] + ["chunk"] * 3
    dense = _dense_masses(model, params, d, num_chunks, x_t, t, layout, frames)
    for name in probes.regions:
        want = dense.get(name, 0.0)
        np.testing.assert_allclose(np.asarray(probes.region(name)), want, atol=2e-5, err_msg=name)
    if num_chunks == 6:
        np.testing.assert_allclose(dense["none"], 0.0, atol=1e-12)  # evicted chunks are masked in the reference
    # Every region is seen: the test would notice masses put on the wrong region.
    assert all(float(np.min(dense[n])) > 1e-3 for n in ("reference", "garment", "sink", "history_1", "chunk"))


def test_slot_masses_follow_the_ring(setup):
    """After six commits the ring holds c4 in slot 2 and c5 in slot 1 (slot = 1 + (c - 1) % 2): the slot masses
    are the region masses read through that map, and an empty slot has none."""
    model, params, d = setup
    spec = kvc.CacheSpec(TPF, window_frames=14, sink_frames=5)
    x_t = d["noise"]
    full = kv_probes.probe(model, params, _stream(model, params, d, spec, 6), x_t, 1000.0)
    np.testing.assert_array_equal(np.asarray(kv_probes.slot_regions(_stream(model, params, d, spec, 6))),
                                  [2, 3, 4])  # sink, history_1 (c5), history_2 (c4)
    np.testing.assert_allclose(full.slot_mass[..., 1], full.region("history_1"), atol=1e-7)
    np.testing.assert_allclose(full.slot_mass[..., 2], full.region("history_2"), atol=1e-7)
    part = kv_probes.probe(model, params, _stream(model, params, d, spec, 1), x_t, 1000.0)
    np.testing.assert_array_equal(np.asarray(part.slot_mass[..., 1:]), 0.0)
    np.testing.assert_array_equal(np.asarray(part.region("history_1")), 0.0)
    assert part.summary().keys() == set(part.regions)
