"""`python -m fc_jax.bench train`: stage-1 (SFT teacher) training step.

Two figures, one JSON object:
- `tiny`: step time and tokens/s of the tiny config's compiled train step on this machine's CPU (one device,
  median over --repeats steps);
- `5b`: the ahead-of-time compiled per-device peak memory (`per_device_peak_bytes`) of the 5B stage-1 step at
  1280x704 with 21 video latent frames (2 + 21 frames, 20,240 tokens per sample), for the recommended mesh and
  remat policy, compiled for --devices fake CPU devices (nothing is allocated; no accelerator needed).

Recommended for 16 GiB-per-chip TPUs (v5e): a 64-chip slice as data=1, fsdp=16, tensor=1, sequence=4 with full
remat of each block; a micro-batch of 16 (1 sample per 4-chip sequence group), 4 accumulation steps for the
authors' global batch of 64.
"""

from __future__ import annotations

import argparse
import os
import sys

_DEVICES_FLAG = "--xla_force_host_platform_device_count="
# XLA:CPU has no bf16 matmul and upcasts bf16 operands to f32; loop-invariant code motion then hoists that upcast
# of whole stacked weight tensors out of the layer loop, which no bf16-capable device does. Disable that pass so
# the CPU compile reports what the accelerator would need (as `python -m fc_jax.bench memory` does).
_NO_LICM = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"


def _set_xla_flags(devices: int) -> None:
    if "jax" in sys.modules:
        import jax

        if jax.device_count() != devices:
            raise SystemExit(f"jax is already initialised with {jax.device_count()} devices; run this benchmark in a "
                             f"fresh process (python -m fc_jax.bench train)")
        return
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICES_FLAG)]
    flags += [f"{_DEVICES_FLAG}{devices}", _NO_LICM]
    os.environ["XLA_FLAGS"] = " ".join(dict.fromkeys(flags))


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m fc_jax.bench train")
    parser.add_argument("--devices", type=int, default=64, help="fake CPU devices for the 5B compile")
    parser.add_argument("--mesh", type=int, nargs=4, default=(1, 16, 1, 4), metavar=("DATA", "FSDP", "TENSOR", "SEQ"))
    parser.add_argument("--remat", default="full", help="remat policy of the 5B compile")
    parser.add_argument("--micro_batch", type=int, default=16, help="global micro-batch of the 5B step")
    parser.add_argument("--accum", type=int, default=4, help="accumulation steps of the 5B step")
    parser.add_argument("--frames", type=int, default=21, help="video latent frames of the 5B step")
    parser.add_argument("--repeats", type=int, default=20, help="timed tiny steps")
    parser.add_argument("--skip_5b", action="store_true", help="only the tiny timing")
    return parser.parse_args(argv)


def _setup(config, mesh_sizes=None):
    from fc_jax.models import dit
    from fc_jax.training import loop, sft, sharding, state as st
    from fc_jax.training.optim import make_optimizer
    from fc_jax.training.step import make_train_step

    import jax

    mesh = sharding.make_mesh(mesh_sizes or config.mesh, None if mesh_sizes else jax.devices()[:1])
    rules = sharding.logical_rules(config)
    model = dit.build_model(config)
    tx, schedule = make_optimizer(config.optim)
    abstract, shardings = st.state_shardings(model, tx, mesh, rules, use_ema=False)
    batch_sh = {k: sharding.logical_sharding(v, mesh, rules) for k, v in sft.BATCH_AXES.items()}
    step = make_train_step(lambda p, b, k: sft.loss_fn(model, config, p, b, k), tx, schedule)
    return model, tx, mesh, rules, abstract, shardings, batch_sh, step


def _tiny(repeats: int) -> dict:
    import runpy

    import jax
    import numpy as np

    from fc_jax.bench.common import median_ms
    from fc_jax.config import CONFIG_DIR
    from fc_jax.training import loop, sft, sharding, state as st

    config = runpy.run_path(os.path.join(CONFIG_DIR, "sft_teacher.py"))["get_config"]("tiny")
    config.mesh.update(dict(data=1, fsdp=1, tensor=1, sequence=1))
    model, tx, mesh, rules, abstract, shardings, batch_sh, step = _setup(config)
    compiled = loop.compile_step(step, abstract, shardings, batch_sh, config, mesh, rules)
    state = st.init_state(model, tx, shardings, seed=0, use_ema=False)
    rng = np.random.default_rng(0)
    batch = {k: rng.standard_normal(a.shape, np.float32) for k, a in loop.abstract_batch(config, batch_sh).items()}
    batch = sharding.global_batch(batch, batch_sh)

    def run():
        nonlocal state
        state, metrics = compiled(state, batch)
        return metrics

    ms = median_ms(run, repeats=repeats, warmup=2)
    tokens = int(config.train.global_batch) * sft.tokens_per_sample(config)
    return {
        "config": config.name,
        "global_batch": int(config.train.global_batch),
        "tokens_per_step": tokens,
        "step_ms": round(ms, 3),
        "tokens_per_second": round(tokens / (ms / 1e3), 1),
        "device": jax.devices()[0].device_kind,
    }


def _five_b(args) -> dict:
    import runpy

    import jax
    import numpy as np

    from fc_jax.bench.common import compiled_memory
    from fc_jax.config import CONFIG_DIR
    from fc_jax.training import loop, sft
    from fc_jax.training.sharding import replicated

    config = runpy.run_path(os.path.join(CONFIG_DIR, "sft_teacher.py"))["get_config"]()
    config.model.remat_policy = args.remat
    config.video.num_frames = 4 * (args.frames - 1) + 1
    config.train.global_batch = args.micro_batch * args.accum
    config.optim.grad_accum_steps = args.accum
    mesh_sizes = dict(zip(("data", "fsdp", "tensor", "sequence"), args.mesh))
    model, tx, mesh, rules, abstract, shardings, batch_sh, step = _setup(config, mesh_sizes)
    loop.batch_layout(config, mesh, rules)  # the micro-batch must split over the batch shards
    batch = loop.abstract_batch(config, batch_sh)
    from fc_jax.training.sharding import activation_sharding

    with activation_sharding(mesh, rules):
        memory = compiled_memory(step, abstract, batch, in_shardings=(shardings, batch_sh),
                                 out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
    leaves = jax.tree.leaves(abstract)
    state_bytes = int(sum(np.prod(x.shape) * x.dtype.itemsize for x in leaves))
    params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params)))
    return {
        "config": config.name,
        "params": params,
        "resolution": [config.video.height, config.video.width],
        "video_latent_frames": args.frames,
        "tokens_per_sample": sft.tokens_per_sample(config),
        "mesh": dict(mesh.shape),
        "devices": jax.device_count(),
        "remat_policy": args.remat,
        "micro_batch": args.micro_batch,
        "grad_accum_steps": args.accum,
        "param_dtype": config.model.param_dtype,
        "compute_dtype": config.model.dtype,
        "attention_backend": "chunked" if config.model.attention.backend == "auto" else config.model.attention.backend,
        "state_bytes_total": state_bytes,
        "per_device_peak_bytes": memory["peak_bytes"],
        "per_device_peak_gib": round(memory["peak_bytes"] / 2**30, 2),
        "per_device": memory,
        "compiled_for": jax.default_backend(),
    }


def main(argv) -> None:
    args = _parse(argv)
    _set_xla_flags(1 if args.skip_5b else args.devices)
    from fc_jax.bench.common import emit

    result = {"benchmark": "train_sft_step", "tiny": _tiny(args.repeats)}
    if not args.skip_5b:
        result["5b"] = _five_b(args)
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    emit(result)
