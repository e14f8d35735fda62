"""The umT5-XXL text encoder (REFERENCE §3), as Wan2.2 runs it.

A pre-norm T5 encoder: token embedding, `num_layers` blocks, final RMS norm. Each block is

    x = x + o(attention(rms_norm(x)))          # no 1/sqrt(d) scaling; each layer its OWN relative-position bias
    x = x + down(gelu_tanh(gate(h)) * up(h))   # h = rms_norm(x); no biases anywhere

The relative-position bias is bidirectional: 32 buckets, half for keys to the left and half for keys to the
right, each half exact up to 8 tokens and logarithmic up to a distance of 128. Padded key positions are
masked out. RMS norms and the softmax run in float32; the rest runs in the config's compute dtype.

Upstream names (for the converter): official `blocks.N.ffn.gate.0` / `fc1` / `fc2` = transformers
`wi_0` / `wi_1` / `wo` = ours `gate` (the GELU'd branch) / `up` / `down`.

The blocks are stacked with `nn.scan`, so every block parameter has a leading `layers` axis.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.models.remat import REMAT_POLICIES



def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket index of every (query, key) pair of a bidirectional T5 attention: int32 [length, length].

    Computed in numpy float32 at trace time (the length is static), exactly as upstream computes it in torch
    float32, so the truncated logarithm lands in the same bucket.
    """
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    dist = np.abs(rel)
    max_exact = half // 2
    far = np.maximum(dist, max_exact).astype(np.float32)  # the log branch is used only where dist >= max_exact
    log_ratio = np.log(far / max_exact) / np.float32(np.log(max_distance / max_exact))
    large = max_exact + (log_ratio * (half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(dist < max_exact, dist, large)).astype(np.int32)


def _param(module: nn.Module, name: str, shape: tuple, axes: tuple, dtype: Any, std: float) -> jax.Array:
    init = nn.with_logical_partitioning(nn.initializers.normal(std), axes)
    return module.param(name, init, shape, dtype)


class RMSNorm(nn.Module):
    """T5 layer norm: `scale * x / sqrt(mean(x^2) + eps)`, no mean subtraction, no bias; statistics in float32.

    [..., d] -> [..., d] in `dtype`.
    """

    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * scale.astype(self.dtype)


class SelfAttention(nn.Module):
    """Bidirectional T5 self-attention with this layer's own relative-position bias and no logit scaling.

    x [B, L, d_model], buckets int32 [L, L], mask bool [B, L] (True = real token) -> [B, L, d_model].
    """

    num_heads: int
    d_kv: int
    num_buckets: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, buckets: jax.Array, mask: jax.Array) -> jax.Array:
        d_model, h, d = x.shape[-1], self.num_heads, self.d_kv
        in_axes, out_axes = ("embed", "heads", "head_dim"), ("heads", "head_dim", "embed")
        wq = _param(self, "q", (d_model, h, d), in_axes, self.param_dtype, (d_model * d) ** -0.5)
        wk = _param(self, "k", (d_model, h, d), in_axes, self.param_dtype, d_model**-0.5)
        wv = _param(self, "v", (d_model, h, d), in_axes, self.param_dtype, d_model**-0.5)
        wo = _param(self, "o", (h, d, d_model), out_axes, self.param_dtype, (h * d) ** -0.5)
        table = _param(self, "rel_bias", (self.num_buckets, h), (None, "heads"), self.param_dtype, d_model**-0.5)

        x = x.astype(self.dtype)
        q = jnp.einsum("ble,ehd->blhd", x, wq.astype(self.dtype))
        k = jnp.einsum("ble,ehd->blhd", x, wk.astype(self.dtype))
        v = jnp.einsum("ble,ehd->blhd", x, wv.astype(self.dtype))
        bias = jnp.transpose(table.astype(self.dtype)[buckets], (2, 0, 1))  # [H, Lq, Lk]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias[None]
        logits = jnp.where(mask[:, None, None, :], logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return jnp.einsum("blhd,hde->ble", out, wo.astype(self.dtype))


class GatedFeedForward(nn.Module):
    """`down(gelu_tanh(gate(x)) * up(x))`, no biases. [B, L, d_model] -> [B, L, d_model]."""

    d_ff: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_model = x.shape[-1]
        w_gate = _param(self, "gate", (d_model, self.d_ff), ("embed", "mlp"), self.param_dtype, d_model**-0.5)
        w_up = _param(self, "up", (d_model, self.d_ff), ("embed", "mlp"), self.param_dtype, d_model**-0.5)
        w_down = _param(self, "down", (self.d_ff, d_model), ("mlp", "embed"), self.param_dtype, self.d_ff**-0.5)
        x = x.astype(self.dtype)
        hidden = jax.nn.gelu(x @ w_gate.astype(self.dtype), approximate=True) * (x @ w_up.astype(self.dtype))
        return hidden @ w_down.astype(self.dtype)


class EncoderBlock(nn.Module):
    """One pre-norm encoder block, written as an `nn.scan` body: (x, buckets, mask) -> (x, None)."""

    num_heads: int
    d_kv: int
    d_ff: int
    num_buckets: int
    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, buckets: jax.Array, mask: jax.Array) -> tuple[jax.Array, None]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = SelfAttention(self.num_heads, self.d_kv, self.num_buckets, name="attn", **kw)
        x = x + attn(RMSNorm(self.eps, name="attn_norm", **kw)(x), buckets, mask)
        x = x + GatedFeedForward(self.d_ff, name="ffn", **kw)(RMSNorm(self.eps, name="ffn_norm", **kw)(x))
        return x, None


class UMT5Encoder(nn.Module):
    """The umT5 encoder: ids int [B, L], mask [B, L] (nonzero = real token; None = all real) -> [B, L, d_model].

    Outputs at padded positions are computed (they attend to the real tokens) but meaningless; callers zero them.
    """

    vocab_size: int
    d_model: int
    num_heads: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat_policy: str = "none"

    @classmethod
    def from_config(cls, cfg) -> "UMT5Encoder":
        """Build from the `umt5` section of an fc_jax config."""
        return cls(
            vocab_size=cfg.vocab_size,
            d_model=cfg.d_model,
            num_heads=cfg.num_heads,
            d_kv=cfg.d_kv,
            d_ff=cfg.d_ff,
            num_layers=cfg.num_layers,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
            eps=cfg.eps,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            remat_policy=cfg.remat_policy,
        )

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        mask = jnp.ones(ids.shape, bool) if mask is None else mask.astype(bool)
        table = _param(self, "embedding", (self.vocab_size, self.d_model), ("vocab", "embed"), self.param_dtype, 1.0)
        x = jnp.take(table, ids, axis=0).astype(self.dtype)
        buckets = jnp.asarray(relative_position_buckets(ids.shape[1], self.num_buckets, self.max_distance))
        x, _ = self._stack()(x, buckets, mask)
        return RMSNorm(self.eps, self.dtype, self.param_dtype, name="final_norm")(x)

    def _stack(self) -> nn.Module:
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"umt5 remat_policy {self.remat_policy!r} is not one of {list(REMAT_POLICIES)}")
        block = EncoderBlock
        if self.remat_policy != "none":
            block = nn.remat(block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
        scanned = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=self.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        return scanned(
            num_heads=self.num_heads,
            d_kv=self.d_kv,
            d_ff=self.d_ff,
            num_buckets=self.num_buckets,
            eps=self.eps,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="layers",
        )


def init_params(model: UMT5Encoder, key: jax.Array, text_len: int) -> dict:
    """Random parameters of `model` (plain arrays, logical-axis boxes removed), initialised under jit."""
    ids = jnp.zeros((1, text_len), jnp.int32)
    return jax.jit(lambda k: nn.unbox(model.init(k, ids, ids > 0)["params"]))(key)
