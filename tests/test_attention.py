"""The attention backends agree, and the chunked path never materialises a T×S mask or score matrix."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.models import attention as attn
from fc_jax.models.attention import BlockLayout, attention, chunked_attention, frame_block_layout


def _qkv(b=2, t=40, s=40, n=2, h=8, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(k1, (b, t, n, h)),
        jax.random.normal(k2, (b, s, n, h)),
        jax.random.normal(k3, (b, s, n, h)),
    )


def _naive(q, k, v, mask):
    """Textbook softmax attention with an explicit [B, T, S] mask (independent of the library)."""
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", w, v)


# 8 frames of 5 tokens: 2 condition frames in block 0, then chunks of 3 frames.
CAUSAL = frame_block_layout([0, 0, 1, 1, 1, 2, 2, 2], tokens_per_frame=5)


@pytest.mark.parametrize("case", ["full", "block_causal", "lengths", "causal_and_lengths"])
@pytest.mark.parametrize("tiles", [(16, 16), (7, 9), (64, 64)])
def test_chunked_equals_xla_and_a_naive_reference(case, tiles):
    q, k, v = _qkv()
    layout = CAUSAL if "causal" in case else None
    lengths = jnp.array([40, 23]) if "lengths" in case else None
    mask = np.ones((2, 40, 40), bool)
    if layout is not None:
        mask &= layout.dense()[None]
    if lengths is not None:
        mask &= np.arange(40)[None, None, :] < np.asarray(lengths)[:, None, None]
    expected = _naive(*map(np.asarray, (q, k, v)), mask)
    xla = attention(q, k, v, backend="xla", layout=layout, kv_lengths=lengths)
    chunked = attention(q, k, v, backend="chunked", layout=layout, kv_lengths=lengths, q_block=tiles[0], kv_block=tiles[1])
    np.testing.assert_allclose(np.asarray(xla), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(xla), atol=1e-5)


def test_chunked_cross_shapes_and_gradients_match_xla():
    q, k, v = _qkv(t=24, s=50)
    lengths = jnp.array([50, 31])

    def loss(backend, q, k, v):
        out = attention(q, k, v, backend=backend, kv_lengths=lengths, q_block=8, kv_block=16)
        return jnp.sum(out * jnp.cos(out))

    g_xla = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2))(q, k, v)
    g_chunked = jax.grad(lambda *a: loss("chunked", *a), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_xla, g_chunked):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)


def test_block_causal_layout_skips_key_tiles_statically():
    layout = frame_block_layout(np.repeat(np.arange(8), 1), tokens_per_frame=16)  # 8 causal blocks of 16 tokens
    tiles, valid = attn._tile_schedule(layout, 128, 128, 128, 16, 16)
    assert valid.sum() == 8 * 9 // 2  # lower triangle of an 8×8 tile grid, not 64
    assert [int(valid[i].sum()) for i in range(8)] == list(range(1, 9))


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _all_shapes(jaxpr):
    """Every intermediate shape in a jaxpr, descending into scan / map / checkpoint bodies."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                yield from _all_shapes(sub)


def test_chunked_path_builds_no_query_by_key_array():
    t, s = 96, 80
    q, k, v = _qkv(b=1, t=t, s=s)
    layout = BlockLayout(np.repeat(np.arange(6), 16), np.repeat(np.arange(5), 16), np.tril(np.ones((6, 5), bool)))
    jaxpr = jax.make_jaxpr(lambda q, k, v: chunked_attention(q, k, v, layout, q_block=16, kv_block=16))(q, k, v)
    shapes = list(_all_shapes(jaxpr.jaxpr))
    tile = [sh for sh in shapes if sh[-2:] == (16, 16)]
    assert tile, "the walk must reach the per-tile [.., q_block, kv_block] logits inside scan/checkpoint bodies"
    assert not [sh for sh in shapes if t in sh and s in sh], "a T×S array appears in the chunked path"
    dense = jax.make_jaxpr(lambda q, k, v: attention(q, k, v, backend="xla", layout=layout))(q, k, v)
    assert [sh for sh in _all_shapes(dense.jaxpr) if t in sh and s in sh], "the walk must see the xla path's T×S"


def test_prefix_decomposition_used_by_cudnn_equals_the_masked_reference():
    """The cudnn backend runs block-causal layouts as one dense call per query run over a key prefix."""
    q, k, v = _qkv()
    lengths = jnp.array([40, 30])
    dense = lambda q, k, v, l: attn._xla_attention(q, k, v, None, l)
    out = attn._by_key_ranges(q, k, v, CAUSAL, lengths, dense)
    expected = attention(q, k, v, backend="xla", layout=CAUSAL, kv_lengths=lengths)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-5)
    assert CAUSAL.prefix_lengths() == [(0, 10, 10), (10, 25, 25), (25, 40, 40)]


def test_non_prefix_layouts_run_by_key_ranges_and_refuse_kv_lengths():
    """A layout whose query blocks see non-prefix keys (here the cached-chunks layout: conditions, committed
    chunks before k, then chunk k itself far to the right) runs on gathered key ranges, equal to the masked
    reference; with kv_lengths (a valid key prefix) it is refused with a pointer to chunked."""
    layout = attn.cached_chunks_layout(3, 2, 2, cond_frames=2)  # 12 queries, 4 + 8 + 12 keys
    q, k, v = _qkv(t=12, s=24)
    dense = lambda q, k, v, l: attn._xla_attention(q, k, v, None, l)
    out = attn._by_key_ranges(q, k, v, layout, None, dense)
    np.testing.assert_allclose(np.asarray(out), np.asarray(attention(q, k, v, backend="xla", layout=layout)),
                               atol=1e-5)
    assert layout.key_ranges()[2] == (8, 12, [(0, 12), (20, 24)])
    with pytest.raises(ValueError, match="use the 'chunked' backend"):
        attention(q, k, v, backend="cudnn", layout=layout, kv_lengths=jnp.array([24, 24]))


def test_bad_arguments_are_named():
    q, k, v = _qkv(t=10, s=12)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="covers 40 queries"):
        attention(q, k, v, layout=CAUSAL)
    with pytest.raises(ValueError, match=r"q \[B,T,N,H\]"):
        attention(q[0], k, v)


def test_chunked_handles_the_teacher_forcing_layout_and_skips_ruled_out_tiles():
    from fc_jax.models.attention import teacher_forcing_layout

    layout = teacher_forcing_layout(3, 3, 4)  # 2 x (2 + 9) frames x 4 tokens = 88 tokens
    q, k, v = _qkv(b=1, t=88, s=88)
    xla = attention(q, k, v, backend="xla", layout=layout)
    chunked = attention(q, k, v, backend="chunked", layout=layout, q_block=8, kv_block=8)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(xla), atol=1e-5)
    tiles, valid = attn._tile_schedule(layout, 88, 88, 88, 8, 8)
    assert valid.sum() < 0.6 * 11 * 11  # well under the dense 11 x 11 tile grid
