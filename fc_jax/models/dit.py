"""WanDiT: the Wan2.2-TI2V-5B diffusion transformer in flax.linen (REFERENCE §1).

One module serves every mode; the mode is an argument:
- plain TI2V (video tokens only, RoPE frames 0..F-1) — `WanDiT.__call__`, for parity with upstream;
- in-context (FashionChameleon): [reference frame, garment frame, video frames] at RoPE frames 0, 1, 2.., the two
  condition frames at t = 0, output for the video frames only — `in_context_forward`;
- block-causal (the streaming student) — pass a `BlockLayout` built by `fc_jax.models.attention`;
- channel-concat (the paper's baseline, `condition="channel_concat"` in the config): the reference and garment
  latents ride on the video tokens' channels instead of being tokens — `channel_concat_forward`.

Latents are channels-last `[B, F, H, W, C]`. Timesteps may be per sample `[B]`, per latent frame `[B, F]` or per
token `[B, F·H'·W']` (H' = H/2, W' = W/2); per-frame timesteps run the time MLP once per frame instead of once per
token. Norms, modulation, the time embedding and the residual stream are fp32; matmuls run in the config's dtype.
(The authors train in bf16 throughout: FSDP `MixedPrecision(param_dtype=bfloat16)`, `utils/distributed.py`, with
the fp32 autocasts of their `model.py` commented out. fc_jax keeps upstream Wan's fp32 islands on purpose.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.models.attention import BlockLayout, attention
from fc_jax.models.remat import REMAT_POLICIES
from fc_jax.models.rope import apply_rope, grid_positions, rope_cos_sin



@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Static hyper-parameters of WanDiT (hashable, so it can be a module attribute)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_channels: int = 48
    out_channels: int = 48
    dim: int = 3072
    ffn_dim: int = 14336
    num_heads: int = 24
    num_layers: int = 30
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_max_positions: int = 1024
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat_policy: str = "none"
    attention_backend: str = "xla"
    q_block: int = 1024
    kv_block: int = 1024
    condition: str = "in_context"  # "in_context" | "channel_concat" (see `channel_concat_inputs`)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def patch_channels(self) -> int:
        """Input channels of the patch embedding: C, or [video, reference, garment] = 3C in channel-concat mode."""
        return self.in_channels * (1 + NUM_CONDITION_FRAMES if self.condition == "channel_concat" else 1)

    @classmethod
    def from_config(cls, model) -> "DiTConfig":
        """From the `model` section of an ml_collections config."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in model.items() if k in fields}
        kwargs["patch_size"] = tuple(model.patch_size)
        if "attention" in model:
            kwargs.update(
                attention_backend=model.attention.backend,
                q_block=model.attention.q_block,
                kv_block=model.attention.kv_block,
            )
        if model.dim % model.num_heads:
            raise ValueError(f"dim {model.dim} is not divisible by num_heads {model.num_heads}")
        if kwargs.get("condition", "in_context") not in CONDITIONS:
            raise ValueError(f"unknown model.condition {kwargs['condition']!r}; expected one of {CONDITIONS}")
        if kwargs.get("remat_policy", "none") not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {kwargs['remat_policy']!r}; expected one of {list(REMAT_POLICIES)}")
        return cls(**kwargs)


def _dense(features: int, names: tuple[str, str], cfg: DiTConfig, name: str, zero_init: bool = False) -> nn.Dense:
    init = nn.initializers.zeros if zero_init else nn.initializers.xavier_uniform()
    return nn.Dense(
        features,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nn.with_logical_partitioning(init, names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (names[1],)),
        name=name,
    )


def _scaled_normal(d: int):
    """N(0, 1/d) init of the modulation tables, as upstream."""
    return lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape, dtype) / math.sqrt(d)


def _constrain(x, names):
    return nn.with_logical_constraint(x, names)


def straight_through(value, surrogate):
    """`value` in the forward pass; in the backward pass its cotangent goes to `surrogate` (same shape), none to
    `value`. Written `sg(value) + (surrogate − sg(surrogate))`: the bracket is exactly 0, so the forward value is
    `value` bit for bit whatever the dtype."""
    return jax.lax.stop_gradient(value) + (surrogate - jax.lax.stop_gradient(surrogate)).astype(value.dtype)


@dataclasses.dataclass(frozen=True)
class CachePrefix:
    """Self-attention over a cache's first `length` tokens followed by the new tokens (instead of writing the new
    tokens into the cache at `write_at`): keys and values `[cache[:, :length], new]`, masked by the `layout`.

    `straight_through_from` = s marks the cache tokens [s, length) as the committed form of the new tokens
    [0, length − s): their forward values come from the cache, their gradient goes to those new tokens
    (`straight_through`), as an in-place cache write that keeps autograd history would send it. None: the cache
    tokens carry no gradient."""

    length: int
    straight_through_from: int | None = None

    def keys_values(self, buffers, new):
        """buffers (k, v) [B, S, N, H] and the new (k, v) [B, T, N, H] -> the attended (k, v) [B, length + T, N, H]
        in the buffers' dtype."""
        out = []
        for buffer, x in zip(buffers, new):
            head, x = buffer[:, : self.length], x.astype(buffer.dtype)
            s = self.straight_through_from
            if s is not None:
                committed = straight_through(head[:, s:], x[:, : self.length - s])
                head = jnp.concatenate([head[:, :s], committed], axis=1)
            out.append(jnp.concatenate([head, x], axis=1))
        return tuple(out)


class RMSNorm(nn.Module):
    """x · rsqrt(mean(x²) + eps) · scale, in fp32 (q/k norm over the full width)."""

    eps: float
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(x.dtype)


def layer_norm(x, eps: float):
    """LayerNorm without affine parameters, fp32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def sinusoidal_embedding(t, dim: int):
    """Timestep sinusoid [..., dim]: cos first, then sin, frequencies 10000^(-i/(dim/2)). fp32."""
    half = dim // 2
    freqs = jnp.asarray(np.power(10000.0, -np.arange(half, dtype=np.float64) / half), jnp.float32)
    angles = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class Attention(nn.Module):
    """Multi-head attention with q/k RMSNorm over the full width (self- or cross-attention).

    Returns (y [B, T, D], (k, v) [B, S, N, H]): the keys (after RoPE) and values it attended with, so callers
    can cache them. `cached_kv=(k, v)` skips computing them from `context` (a cached cross-attention).
    `kv_buffer=(k_buf, v_buf)` [B, S_buf, N, H] plus `write_at` (int): the new keys/values are written into a
    copy of the buffer at token `write_at` and the queries attend over that buffer (limit with `kv_lengths`);
    with `prefix` (a `CachePrefix`) instead, they attend over the buffer's prefix followed by the new keys/values.
    The returned (k, v) are then the new ones only. The queries (after RoPE) [B, T, N, H] are sown as
    intermediates "queries", returned only when applied with `mutable=["intermediates"]` (`fc_jax.kv_probes`).
    """

    cfg: DiTConfig
    prefix: CachePrefix | None = None

    @nn.compact
    def __call__(self, x, context, rope=None, layout=None, kv_lengths=None, cached_kv=None, kv_buffer=None,
                 write_at=None):
        cfg = self.cfg
        b, t, _ = x.shape
        dt = jnp.dtype(cfg.dtype)
        split = lambda a: a.reshape(a.shape[0], a.shape[1], cfg.num_heads, cfg.head_dim)
        q = split(RMSNorm(cfg.eps, name="norm_q")(_dense(cfg.dim, ("embed", "heads"), cfg, "q")(x.astype(dt))))
        if cached_kv is not None:
            k, v = cached_kv
        else:
            k = split(RMSNorm(cfg.eps, name="norm_k")(_dense(cfg.dim, ("embed", "heads"), cfg, "k")(context.astype(dt))))
            v = split(_dense(cfg.dim, ("embed", "heads"), cfg, "v")(context.astype(dt)))
            if rope is not None:
                k = apply_rope(k, *rope)
        if rope is not None:
            q = apply_rope(q, *rope)
        q = _constrain(q, ("batch", "tokens", "heads", "head_dim"))
        self.sow("intermediates", "queries", q)
        keys, values = k, v
        if kv_buffer is not None and self.prefix is not None:
            keys, values = self.prefix.keys_values(kv_buffer, (k, v))
        elif kv_buffer is not None:
            keys = jax.lax.dynamic_update_slice_in_dim(kv_buffer[0], k.astype(kv_buffer[0].dtype), write_at, axis=1)
            values = jax.lax.dynamic_update_slice_in_dim(kv_buffer[1], v.astype(kv_buffer[1].dtype), write_at, axis=1)
        y = attention(
            q, keys.astype(q.dtype), values.astype(q.dtype), backend=cfg.attention_backend, layout=layout,
            kv_lengths=kv_lengths, q_block=cfg.q_block, kv_block=cfg.kv_block,
        )
        return _dense(cfg.dim, ("heads", "embed"), cfg, "o")(y.reshape(b, t, cfg.dim)), (k, v)


class Block(nn.Module):
    """One Wan block: modulated self-attention, affine-LN cross-attention, modulated FFN.

    x: [B, L, D] fp32 residual stream; e0: [B, F, P, 6, D] modulation (P = 1 per frame or H'W' per token);
    ctx: [B, Lt, D] embedded text (None when `cache` holds the cross-attention K/V); rope: (cos, sin);
    cache: this layer's {"k", "v"} self-attention buffers [B, S, N, H] and/or {"cross_k", "cross_v"}; `prefix`:
    how the self-attention reads the buffers (see `CachePrefix`; None: the new tokens are written at `write_at`).
    Returns (x, kv) with kv = {"k", "v", "cross_k", "cross_v"} of this call.
    """

    cfg: DiTConfig
    layout: BlockLayout | None = None
    prefix: CachePrefix | None = None

    @nn.compact
    def __call__(self, x, e0, ctx, rope, kv_lengths=None, write_at=None, cache=None):
        cfg = self.cfg
        cache = cache or {}
        b, l, d = x.shape
        f = e0.shape[1]
        modulation = self.param(
            "modulation", nn.with_logical_partitioning(_scaled_normal(d), (None, "embed")), (6, d), jnp.float32
        )
        mod = modulation.astype(jnp.float32) + e0  # [B, F, P, 6, D]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = [mod[..., i, :] for i in range(6)]

        def modulate(h, shift, scale):  # h [B, L, D] -> per frame [B, F, L/F, D]
            h = h.reshape(b, f, l // f, d)
            return (h * (1.0 + scale) + shift).reshape(b, l, d)

        def gated(y, gate):
            return (y.astype(jnp.float32).reshape(b, f, l // f, d) * gate).reshape(b, l, d)

        h = modulate(layer_norm(x, cfg.eps), shift_sa, scale_sa)
        buffer = (cache["k"], cache["v"]) if "k" in cache else None
        y, (k, v) = Attention(cfg, self.prefix, name="self_attn")(h, h, rope, self.layout, kv_lengths, None, buffer,
                                                                  write_at)
        x = _constrain(x + gated(y, gate_sa), ("batch", "tokens", "embed"))

        h = nn.LayerNorm(
            epsilon=cfg.eps,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="norm3",
        )(x)
        cross = (cache["cross_k"], cache["cross_v"]) if "cross_k" in cache else None
        y, (cross_k, cross_v) = Attention(cfg, name="cross_attn")(h, ctx, cached_kv=cross)
        x = x + y.astype(jnp.float32)

        h = modulate(layer_norm(x, cfg.eps), shift_ff, scale_ff).astype(jnp.dtype(cfg.dtype))
        h = nn.gelu(_dense(cfg.ffn_dim, ("embed", "mlp"), cfg, "ffn_0")(h), approximate=True)
        h = _constrain(h, ("batch", "tokens", "mlp"))
        x = x + gated(_dense(cfg.dim, ("mlp", "embed"), cfg, "ffn_1")(h), gate_ff)
        kv = {"k": k, "v": v, "cross_k": cross_k, "cross_v": cross_v}
        return _constrain(x, ("batch", "tokens", "embed")), kv


class _ScannedBlock(nn.Module):
    """Adapter for `nn.scan`: carries x, broadcasts the shared inputs, scans the per-layer cache, and emits
    the per-layer K/V (only when `return_kv`, so plain forwards keep no [layers, ...] K/V arrays)."""

    cfg: DiTConfig
    layout: BlockLayout | None = None
    return_kv: bool = False
    prefix: CachePrefix | None = None

    @nn.compact
    def __call__(self, x, shared, cache):
        e0, ctx, rope, kv_lengths, write_at = shared
        block = Block
        if self.cfg.remat_policy != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[self.cfg.remat_policy], prevent_cse=False)
        x, kv = block(self.cfg, self.layout, self.prefix, name="block")(x, e0, ctx, rope, kv_lengths, write_at, cache)
        return x, (kv if self.return_kv else None)


class WanDiT(nn.Module):
    """The Wan2.2 DiT. See the module docstring for the modes."""

    cfg: DiTConfig

    @nn.compact
    def __call__(
        self,
        latents,
        timesteps,
        context,
        frame_positions=None,
        layout: BlockLayout | None = None,
        kv_lengths=None,
        cache=None,
        write_at=None,
        return_kv: bool = False,
        cache_prefix: CachePrefix | None = None,
    ):
        """latents [B, F, H, W, C_in]; timesteps [B] | [B, F] | [B, F·H'·W']; context [B, Lt, text_dim] (may be
        None when `cache` holds the cross-attention K/V); frame_positions [F] RoPE frame index of each latent
        frame (default 0..F-1; may be traced); layout: a `BlockLayout` over the tokens (None = full attention);
        kv_lengths [B]: valid keys per row.

        cache: per-layer arrays stacked on a leading layers axis — {"k", "v"} [L, B, S, N, H] self-attention
        buffers the new tokens are written into at token `write_at` before attending over them (with
        `cache_prefix`: attended as that prefix followed by the new tokens, nothing written), and/or
        {"cross_k", "cross_v"} [L, B, Lt, N, H]. Returns the flow prediction [B, F, H, W, C_out] (fp32), and with
        `return_kv` also {"k", "v", "cross_k", "cross_v"} [L, B, T, N, H] computed by this call.
        """
        cfg = self.cfg
        b, f, hgt, wid = self._check_inputs(latents, context)
        pt, ph, pw = cfg.patch_size
        gh, gw = hgt // ph, wid // pw
        if frame_positions is None:
            frame_positions = np.arange(f)
        _check_positions(frame_positions, cfg.rope_max_positions, max(gh, gw))

        x = nn.Conv(
            cfg.dim,
            kernel_size=cfg.patch_size,
            strides=cfg.patch_size,
            padding="VALID",
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.xavier_uniform(), (None, None, None, "channels", "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="patch_embedding",
        )(latents.astype(jnp.dtype(cfg.dtype)))
        x = x.reshape(b, f * gh * gw, cfg.dim).astype(jnp.float32)
        x = _constrain(x, ("batch", "tokens", "embed"))

        e, e0 = self._time_embedding(timesteps, b, f, gh * gw)
        ctx = None
        if context is not None:
            ctx = _dense(cfg.dim, ("kv", "embed"), cfg, "text_embedding_0")(context.astype(jnp.dtype(cfg.dtype)))
            ctx = _dense(cfg.dim, ("embed", "embed"), cfg, "text_embedding_1")(nn.gelu(ctx, approximate=True))

        rope = rope_cos_sin(
            grid_positions(frame_positions, gh, gw), cfg.head_dim, cfg.rope_max_positions, cfg.rope_theta
        )
        blocks = nn.scan(
            _ScannedBlock,
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, 0),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, layout, return_kv, cache_prefix, name="blocks")
        x, kv = blocks(x, (e0, ctx, rope, kv_lengths, write_at), cache)
        out = self._head(x, e, b, f, gh, gw)
        return (out, kv) if return_kv else out

    def _check_inputs(self, latents, context):
        cfg = self.cfg
        if latents.ndim != 5:
            raise ValueError(f"latents must be [B, F, H, W, C] (channels-last); got shape {latents.shape}")
        b, f, hgt, wid, c = latents.shape
        if c != cfg.patch_channels:
            mode = " (channel-concat: video, reference and garment latents on channels)" * (
                cfg.condition == "channel_concat")
            raise ValueError(f"latents have {c} channels; this model expects {cfg.patch_channels}{mode} (shape "
                             f"{latents.shape})")
        pt, ph, pw = cfg.patch_size
        if f % pt or hgt % ph or wid % pw:
            raise ValueError(
                f"latent grid (F, H, W) = {(f, hgt, wid)} is not divisible by the patch size {cfg.patch_size}"
            )
        if context is not None and (context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.text_dim):
            raise ValueError(f"context must be [B={b}, L, {cfg.text_dim}]; got shape {context.shape}")
        return b, f, hgt, wid

    def _time_embedding(self, timesteps, b: int, f: int, per_frame: int):
        """e [B, F, P, D] and e0 [B, F, P, 6, D] with P = 1 (per-sample / per-frame t) or H'W' (per-token t)."""
        cfg = self.cfg
        t = jnp.asarray(timesteps)
        if t.ndim == 1:
            t = jnp.broadcast_to(t[:, None, None], (b, f, 1))
        elif t.ndim == 2 and t.shape[1] == f:
            t = t[:, :, None]
        elif t.ndim == 2 and t.shape[1] == f * per_frame:
            t = t.reshape(b, f, per_frame)
        else:
            raise ValueError(
                f"timesteps must be [B], [B, F={f}] or [B, F*H'*W'={f * per_frame}]; got shape {t.shape}"
            )
        fdense = lambda feats, names, name: nn.Dense(
            feats, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), names),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (names[1],)), name=name,
        )
        e = fdense(cfg.dim, (None, "embed"), "time_embedding_0")(sinusoidal_embedding(t, cfg.freq_dim))
        e = fdense(cfg.dim, ("embed", "embed"), "time_embedding_1")(nn.silu(e))
        e0 = fdense(6 * cfg.dim, ("embed", "mlp"), "time_projection")(nn.silu(e))
        return e, e0.reshape(*e0.shape[:-1], 6, cfg.dim)

    def _head(self, x, e, b, f, gh, gw):
        cfg = self.cfg
        d = cfg.dim
        modulation = self.param(
            "head_modulation",
            nn.with_logical_partitioning(_scaled_normal(d), (None, "embed")),
            (2, d),
            jnp.float32,
        )
        mod = modulation.astype(jnp.float32) + e[..., None, :]  # [B, F, P, 2, D]
        shift, scale = mod[..., 0, :], mod[..., 1, :]
        h = layer_norm(x, cfg.eps).reshape(b, f, -1, d)
        h = (h * (1.0 + scale) + shift).reshape(b, -1, d)
        pt, ph, pw = cfg.patch_size
        out = _dense(pt * ph * pw * cfg.out_channels, ("embed", "channels"), cfg, "head", zero_init=True)(
            h.astype(jnp.dtype(cfg.dtype))
        ).astype(jnp.float32)
        out = out.reshape(b, f // pt, gh, gw, pt, ph, pw, cfg.out_channels)
        out = jnp.transpose(out, (0, 1, 4, 2, 5, 3, 6, 7))
        return out.reshape(b, f, gh * ph, gw * pw, cfg.out_channels)


def _check_positions(frame_positions, max_positions: int, grid_extent: int):
    """Raise before RoPE would read past its table (only where positions are concrete)."""
    try:
        top = int(np.max(np.asarray(frame_positions)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if top >= max_positions or grid_extent > max_positions:
        raise ValueError(
            f"RoPE positions exceed the table of {max_positions}: frame position {top}, grid extent {grid_extent}; "
            "rebase positions (a fresh segment) or raise rope_max_positions"
        )


# ----------------------------------------------------------------------------------------------------------------
# The in-context mode (FashionChameleon).

NUM_CONDITION_FRAMES = 2  # reference latent frame, garment latent frame
CONDITIONS = ("in_context", "channel_concat")


def in_context_inputs(reference, garment, video, video_timesteps):
    """Assemble the in-context sequence.

    reference, garment: [B, 1, H, W, C] clean latents; video: [B, F, H, W, C] noisy latents;
    video_timesteps: [B] or [B, F]. Returns (latents [B, 2+F, H, W, C], timesteps [B, 2+F] with the condition
    frames at t = 0, frame_positions [2+F] = 0, 1, 2, ...).
    """
    for name, cond in (("reference", reference), ("garment", garment)):
        if cond.ndim != 5 or cond.shape[1] != 1 or cond.shape[0] != video.shape[0] or cond.shape[2:] != video.shape[2:]:
            raise ValueError(
                f"{name} latent must be [B, 1, H, W, C] matching the video {video.shape}; got {cond.shape}"
            )
    b, f = video.shape[:2]
    t = jnp.asarray(video_timesteps, jnp.float32)
    t = jnp.broadcast_to(t[:, None], (b, f)) if t.ndim == 1 else t
    timesteps = jnp.concatenate([jnp.zeros((b, NUM_CONDITION_FRAMES), jnp.float32), t], axis=1)
    latents = jnp.concatenate([reference.astype(video.dtype), garment.astype(video.dtype), video], axis=1)
    return latents, timesteps, np.arange(NUM_CONDITION_FRAMES + f)


def in_context_forward(model: WanDiT, params, reference, garment, video, video_timesteps, context, layout=None):
    """Flow prediction for the video frames only, [B, F, H, W, C], conditions at RoPE frames 0, 1 and t = 0."""
    if model.cfg.condition != "in_context":
        raise ValueError(f"the in-context forward needs model.condition 'in_context'; this model is "
                         f"{model.cfg.condition!r} (use `conditioned_forward`)")
    latents, timesteps, positions = in_context_inputs(reference, garment, video, video_timesteps)
    out = model.apply({"params": params}, latents, timesteps, context, positions, layout)
    return out[:, NUM_CONDITION_FRAMES:]


# ----------------------------------------------------------------------------------------------------------------
# The channel-concat mode (the paper's baseline).


def channel_concat_inputs(reference, garment, video):
    """latents [B, F, H, W, 3C] = [video, reference, garment] on channels, the single-frame condition latents
    ([B, 1, H, W, C], clean) repeated along the F video frames, so every video token sees the reference and
    garment at its own (h, w). The tokens, their RoPE frames and timesteps are the video's alone."""
    for name, cond in (("reference", reference), ("garment", garment)):
        if cond.ndim != 5 or cond.shape[1] != 1 or cond.shape[0] != video.shape[0] or cond.shape[2:] != video.shape[2:]:
            raise ValueError(
                f"{name} latent must be [B, 1, H, W, C] matching the video {video.shape}; got {cond.shape}"
            )
    frames = lambda cond: jnp.broadcast_to(cond.astype(video.dtype), video.shape)
    return jnp.concatenate([video, frames(reference), frames(garment)], axis=-1)


def channel_concat_forward(model: WanDiT, params, reference, garment, video, video_timesteps, context):
    """Flow prediction [B, F, H, W, C] of a channel-concat model (video_timesteps [B] or [B, F])."""
    if model.cfg.condition != "channel_concat":
        raise ValueError(f"the channel-concat forward needs model.condition 'channel_concat'; this model is "
                         f"{model.cfg.condition!r}")
    latents = channel_concat_inputs(reference, garment, video)
    return model.apply({"params": params}, latents, video_timesteps, context)


def conditioned_forward(model: WanDiT, params, reference, garment, video, video_timesteps, context):
    """The video's flow prediction [B, F, H, W, C] given the reference and garment, in the model's condition mode
    (`in_context_forward` or `channel_concat_forward`)."""
    forward = channel_concat_forward if model.cfg.condition == "channel_concat" else in_context_forward
    return forward(model, params, reference, garment, video, video_timesteps, context)


def widen_patch_embedding(params, channels: int):
    """`params` with the patch-embedding kernel [pt, ph, pw, C, D] zero-padded to `channels` input channels (a
    base model's weights for a channel-concat model: the new channels contribute nothing until trained)."""
    kernel = params["patch_embedding"]["kernel"]
    have = kernel.shape[-2]
    if have > channels:
        raise ValueError(f"the patch embedding has {have} input channels, more than the model's {channels} (a "
                         f"channel-concat checkpoint for an in-context model?)")
    pad = [(0, 0)] * (kernel.ndim - 2) + [(0, channels - have), (0, 0)]
    return dict(params, patch_embedding=dict(params["patch_embedding"], kernel=jnp.pad(kernel, pad)))


# ----------------------------------------------------------------------------------------------------------------
# The TI2V mode (Wan2.2-TI2V's text + first frame -> video; the tiny world's base model).


def ti2v_inputs(first, video, t):
    """The TI2V input: latents [B, F, H, W, C] = `video` with frame 0 replaced by the clean first-frame latent
    `first` [B, 1, H, W, C]; per-frame timesteps [B, F], 0 on frame 0 (upstream gives frame-0 tokens t = 0) and
    `t` ([B] or a scalar) on the others."""
    if first.ndim != 5 or first.shape[1] != 1 or first.shape[0] != video.shape[0] or first.shape[2:] != video.shape[2:]:
        raise ValueError(f"first-frame latent must be [B, 1, H, W, C] matching the video {video.shape}; got "
                         f"{first.shape}")
    b, f = video.shape[:2]
    latents = jnp.concatenate([first.astype(video.dtype), video[:, 1:]], axis=1)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
    timesteps = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), jnp.repeat(t[:, None], f - 1, axis=1)], axis=1)
    return latents, timesteps


def ti2v_forward(model: WanDiT, params, first, video, t, context):
    """Flow prediction [B, F, H, W, C] (fp32) for noisy latents `video` whose frame 0 is the clean `first`."""
    latents, timesteps = ti2v_inputs(first, video, t)
    return model.apply({"params": params}, latents, timesteps, context).astype(jnp.float32)


def build_model(config) -> WanDiT:
    """WanDiT from a full ml_collections config (uses its `model` section)."""
    return WanDiT(DiTConfig.from_config(config.model))


def abstract_params(model: WanDiT, batch: int = 1, frames: int = 1, height: int = 2, width: int = 2):
    """Parameter shapes via `jax.eval_shape` (nothing allocated), as plain arrays-of-ShapeDtypeStruct."""
    cfg = model.cfg

    def init():
        latents = jnp.zeros((batch, frames, height, width, cfg.patch_channels), jnp.float32)
        context = jnp.zeros((batch, 1, cfg.text_dim), jnp.float32)
        return model.init(jax.random.key(0), latents, jnp.zeros((batch,)), context)["params"]

    return nn.unbox(jax.eval_shape(init))


def init_params(model: WanDiT, key, batch: int = 1, frames: int = 1, height: int = 2, width: int = 2):
    """Random parameters (plain arrays, logical-axis boxes removed), initialised under jit."""
    cfg = model.cfg

    @jax.jit
    def init(key):
        latents = jnp.zeros((batch, frames, height, width, cfg.patch_channels), jnp.float32)
        context = jnp.zeros((batch, 1, cfg.text_dim), jnp.float32)
        return nn.unbox(model.init(key, latents, jnp.zeros((batch,)), context)["params"])

    return init(key)
