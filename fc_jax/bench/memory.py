"""`python -m fc_jax.bench memory [--config=configs/wan22_ti2v_5b.py] [--mode=teacher|student]`: the parameter
count and the ahead-of-time compiled peak memory, on abstract shapes (nothing is allocated, no accelerator), of

- teacher: the in-context forward (reference + garment + 21 video latent frames at 1280x704 = 20,240 tokens);
- student: one streaming chunk step with the config's KV-cache window (denoise read and commit, cache donated)."""

from __future__ import annotations

import os

# XLA:CPU has no bf16 matmul: it upcasts bf16 weights to f32, and loop-invariant code motion then hoists that
# upcast of the whole stacked weight tensor out of the layer loop (+20 GB of "temp" that no accelerator build
# has). Disable that one pass so the CPU compile reports what a bf16-capable device would need.
_NO_LICM = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"
if _NO_LICM not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _NO_LICM).strip()

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import compiled_memory, emit
from fc_jax.config import config_file
from fc_jax import kv_cache
from fc_jax.models import dit

FLAGS = flags.FlagValues()
cli.DEFINE_config_file("config", "configs/wan22_ti2v_5b.py", "model config (NAME[:VARIANT] or a file)", FLAGS,
                       resolve=config_file)
flags.DEFINE_integer("frames", 21, "video latent frames", flag_values=FLAGS)
flags.DEFINE_integer("batch", 1, "samples per forward (teacher mode)", flag_values=FLAGS)
flags.DEFINE_string("backend", None, "attention backend (default: the config's)", flag_values=FLAGS)
flags.DEFINE_enum("mode", "teacher", ["teacher", "student"],
                  "teacher: the in-context forward; student: one streaming chunk step", flag_values=FLAGS)


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after `python -m fc_jax.bench memory`."""
    cli.parse(FLAGS, "python -m fc_jax.bench memory", argv, description=__doc__)
    args = FLAGS

    config = args.config
    if args.backend:
        config.model.attention.backend = args.backend
    model = dit.build_model(config)
    cfg = model.cfg
    params = dit.abstract_params(model)
    count = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))

    h, w = config.video.height // 16, config.video.width // 16
    backend = cfg.attention_backend
    if backend == "auto":
        backend = "cudnn" if jax.default_backend() == "gpu" else "chunked"
    common = {
        "config": config.name, "params": count,
        "param_bytes": int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(params))),
        "resolution": [config.video.height, config.video.width], "dtype": cfg.dtype, "attention_backend": backend,
        "compiled_for": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if args.mode == "student":
        emit({"benchmark": "student_chunk_step_memory", **common, **_student_memory(config, model, params, h, w)})
        return
    dt = jnp.dtype(cfg.dtype)
    cond = jax.ShapeDtypeStruct((args.batch, 1, h, w, cfg.in_channels), dt)
    video = jax.ShapeDtypeStruct((args.batch, args.frames, h, w, cfg.in_channels), dt)
    t = jax.ShapeDtypeStruct((args.batch,), jnp.float32)
    context = jax.ShapeDtypeStruct((args.batch, cfg.text_len, cfg.text_dim), dt)

    def forward(params, ref, garment, video, t, context):
        return dit.in_context_forward(model, params, ref, garment, video, t, context)

    memory = compiled_memory(forward, params, cond, cond, video, t, context)
    tokens = (args.frames + 2) * (h // 2) * (w // 2)
    emit({"benchmark": "dit_in_context_forward_memory", **common, "tokens": tokens, **memory})


def _student_memory(config, model, params, h: int, w: int) -> dict:
    spec = kv_cache.CacheSpec.from_config(config, h, w)
    cache = jax.eval_shape(lambda: kv_cache.init_cache(model, spec, 1, h, w))
    x = jax.ShapeDtypeStruct((1, spec.chunk_frames, h, w, model.cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((), jnp.float32)
    denoise = compiled_memory(lambda p, c, x, t: kv_cache.denoise(model, p, c, x, t), params, cache, x, t)
    commit = compiled_memory(lambda p, c, x: kv_cache.commit(model, p, c, x), params, cache, x, donate_argnums=1)
    cache_bytes = int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(cache)))
    return {"window_frames": spec.window_frames, "window_tokens": spec.buffer_tokens, "cache_bytes": cache_bytes,
            "denoise": denoise, "commit": commit}
