"""`python -m fc_jax.bench train`: stage-1 (SFT teacher) training step.

Two figures, one JSON object:
- `tiny`: step time and tokens/s of the tiny config's compiled train step on this machine's CPU (one device,
  median over --repeats steps);
- `5b`: the ahead-of-time compiled per-device peak memory (`per_device_peak_bytes`) of the 5B stage-1 step at
  1280x704 with 21 video latent frames (2 + 21 frames, 20,240 tokens per sample), for the recommended mesh and
  remat policy, compiled for --devices fake CPU devices (nothing is allocated; no accelerator needed).
Both with `--trainable` (`config.train.trainable`: all | attention | lora, `fc_jax.training.peft`), reporting the
trainable and total parameter counts.

Recommended for 16 GiB-per-chip TPUs (v5e): a 64-chip slice as data=1, fsdp=16, tensor=1, sequence=4 with full
remat of each block; a micro-batch of 16 (1 sample per 4-chip sequence group), 4 accumulation steps for the
global batch of 64 (the authors' README; configs/sft_teacher.py says why not their launch script's 4).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from fc_jax import cli

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


FLAGS = flags.FlagValues()
flags.DEFINE_integer("devices", 64, "fake CPU devices for the 5B compile", flag_values=FLAGS)
cli.DEFINE_integers("mesh", (1, 16, 1, 4), "DATA,FSDP,TENSOR,SEQ mesh of the 5B compile", FLAGS, count=4)
flags.DEFINE_string("remat", "full", "remat policy of the 5B compile", flag_values=FLAGS)
flags.DEFINE_integer("micro_batch", 16, "global micro-batch of the 5B step", flag_values=FLAGS)
flags.DEFINE_integer("accum", 4, "accumulation steps of the 5B step", flag_values=FLAGS)
flags.DEFINE_integer("frames", 21, "video latent frames of the 5B step", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 20, "timed tiny steps", flag_values=FLAGS)
flags.DEFINE_bool("skip_5b", False, "only the tiny timing", flag_values=FLAGS)
flags.DEFINE_enum("trainable", "all", ["all", "attention", "lora"], "config.train.trainable of both steps",
                  flag_values=FLAGS)


def _parameters(s) -> dict:
    """{trainable, trainable_params, params} of a setup's state (LoRA factors counted in params)."""
    from fc_jax.training.peft import Trainable, parameter_counts

    trainable = Trainable.from_config(s.config)
    count, total = parameter_counts(s.abstract.params, trainable.mask(s.abstract.params))
    return {"trainable": trainable.mode, "trainable_params": count, "params": total}


def _tiny(repeats: int, trainable: str) -> dict:
    import jax
    import numpy as np

    from fc_jax.bench.common import median_ms
    from fc_jax.config import load_config
    from fc_jax.training.setup import setup

    config = load_config("sft_teacher:tiny")
    config.train.trainable = trainable
    s = setup(config, devices=jax.devices()[:1], mesh_sizes=dict(data=1, fsdp=1, tensor=1, sequence=1))
    run = s.stage.compile(s)
    state = s.stage.initial_state(s)
    rng = np.random.default_rng(0)
    batch = {k: jax.device_put(rng.standard_normal(a.shape, np.float32), a.sharding)
             for k, a in s.stage.abstract_batch(s).items()}

    def step():
        nonlocal state
        state, metrics = run(state, batch)
        return metrics

    ms = median_ms(step, repeats=repeats, warmup=2)
    tokens = int(config.train.global_batch) * s.stage.tokens_per_sample(config)
    return {
        "config": config.name,
        **_parameters(s),
        "global_batch": int(config.train.global_batch),
        "tokens_per_step": tokens,
        "step_ms": round(ms, 3),
        "tokens_per_second": round(tokens / (ms / 1e3), 1),
        "device": jax.devices()[0].device_kind,
    }


def _five_b(args) -> dict:
    import jax
    import numpy as np

    from fc_jax.bench.common import compiled_memory
    from fc_jax.config import load_config
    from fc_jax.training.setup import setup
    from fc_jax.training.sharding import activation_sharding, replicated

    config = load_config("sft_teacher")
    config.model.remat_policy = args.remat
    config.video.num_frames = 4 * (args.frames - 1) + 1
    config.train.global_batch = args.micro_batch * args.accum
    config.optim.grad_accum_steps = args.accum
    config.train.trainable = args.trainable
    s = setup(config, mesh_sizes=dict(zip(("data", "fsdp", "tensor", "sequence"), args.mesh)))
    mesh = s.mesh
    with activation_sharding(mesh, s.rules):
        memory = compiled_memory(s.stage.train_step(s), s.abstract, s.stage.abstract_batch(s),
                                 in_shardings=(s.shardings, s.batch_shardings),
                                 out_shardings=(s.shardings, replicated(mesh)), donate_argnums=(0,))
    leaves = jax.tree.leaves(s.abstract)
    state_bytes = int(sum(np.prod(x.shape) * x.dtype.itemsize for x in leaves))
    return {
        "config": config.name,
        **_parameters(s),
        "resolution": [config.video.height, config.video.width],
        "video_latent_frames": args.frames,
        "tokens_per_sample": s.stage.tokens_per_sample(config),
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


def main(argv=None) -> None:
    cli.parse(FLAGS, "python -m fc_jax.bench train", argv, description=__doc__.split("\n\n")[0])
    _set_xla_flags(1 if FLAGS.skip_5b else FLAGS.devices)
    from fc_jax.bench.common import emit

    result = {"benchmark": "train_sft_step", "tiny": _tiny(FLAGS.repeats, FLAGS.trainable)}
    if not FLAGS.skip_5b:
        result["5b"] = _five_b(FLAGS)
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    emit(result)
