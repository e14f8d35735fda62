"""`python -m fc_jax.bench distill [--repeats=N] [--memory]`: per-iteration times on this machine of the tiny
stage-2 step (teacher forcing, chunked attention) and the tiny stage-3 steps (generator: rollout + real/fake
scores + update; critic: no-grad rollout + flow loss + update), single device, compiled once, state donated.

`--memory` adds the ahead-of-time compiled per-device memory of the 5B stage-3 generator and critic steps
(configs/gr_dmd.py; three 5B networks, and in the generator step the VAE decode + aesthetic reward unless
`--noreward`) on `--mesh` over fake CPU devices, nothing allocated; run it as
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m fc_jax.bench distill --memory
(the flag must be set before jax starts; the bf16-upcast flag of fc_jax.bench.memory is added). Prints one JSON
object."""

from __future__ import annotations

import json

from absl import flags

from fc_jax import cli
from fc_jax.bench import memory as _memory  # noqa: F401  (sets the XLA flag that keeps CPU-only bf16 upcasts out)

import jax
import numpy as np

from fc_jax.bench.common import emit, median_ms

FLAGS = flags.FlagValues()
flags.DEFINE_integer("repeats", 5, "timed calls (median)", flag_values=FLAGS)
flags.DEFINE_bool("memory", False, "also the 5B AOT per-device memory", flag_values=FLAGS)
flags.DEFINE_string("mesh", '{"data": 1, "fsdp": -1, "tensor": 1, "sequence": 1}', "mesh of the 5B compile (JSON)",
                    flag_values=FLAGS)
flags.DEFINE_bool("skip_times", False, "only the 5B memory", flag_values=FLAGS)
flags.DEFINE_bool("reward", True, "5B memory with the reward in the loop (--noreward: without)", flag_values=FLAGS)

ONE_DEVICE = dict(data=1, fsdp=1, tensor=1, sequence=1)


def _tiny_setup(name: str):
    from fc_jax.config import load_config
    from fc_jax.training.setup import setup

    return setup(load_config(f"{name}:tiny"), devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)


def _random_batch(s) -> dict:
    rng = np.random.default_rng(0)
    return {k: jax.device_put(rng.standard_normal(a.shape, np.float32), a.sharding)
            for k, a in s.stage.abstract_batch(s).items()}


def _teacher_forcing_ms(repeats: int) -> dict:
    s = _tiny_setup("teacher_forcing")
    run, batch = s.stage.compile(s), _random_batch(s)
    holder = [s.stage.initial_state(s)]

    def step():
        holder[0], metrics = run(holder[0], batch)
        return metrics

    _, b, f, h, w, _ = batch["video"].shape
    return {"batch": b, "latent_frames": f, "tokens": 2 * (f + 2) * (h // 2) * (w // 2),
            "attention_backend": s.config.model.attention.backend, "ms": median_ms(step, repeats)}


def _gr_dmd_ms(repeats: int) -> dict:
    s = _tiny_setup("gr_dmd")
    steps, batch = s.stage.compiled_steps(s, reward=None), _random_batch(s)
    holder, real = [s.stage.initial_state(s)], s.stage.teacher(s)
    out = {"batch": int(s.config.train.global_batch), "chunks": int(s.config.distill.num_chunks), "reward": "none"}
    gen, critic = steps.generator(batch), steps.critic(batch)  # one program each, for every exit step
    for exit_step in (0, 3):
        e = steps.exit_step(exit_step)

        def run_gen():
            holder[0], m = gen(holder[0], real, steps.reward_params, batch, e)
            return m

        def run_critic():
            holder[0], m = critic(holder[0], batch, e)
            return m

        out[f"generator_ms_exit{exit_step}"] = median_ms(run_gen, repeats)
        out[f"critic_ms_exit{exit_step}"] = median_ms(run_critic, repeats)
    # An iteration is a critic step, plus a generator step every `generator_every`-th (exit step uniform).
    every = int(s.config.distill.generator_every)
    mean = lambda k: (out[f"{k}_ms_exit0"] + out[f"{k}_ms_exit3"]) / 2
    out["mean_iteration_ms"] = mean("critic") + mean("generator") / every
    return out


def _memory_5b(mesh_sizes: dict, with_reward: bool) -> dict:
    """Compiled per-device memory of the 5B generator and critic steps (one program each for every exit step;
    batch: one sample per batch shard), the generator's with the aesthetic reward in the loop (VAE decode of the rollout + CLIP ViT-L/14 + LAION head)."""
    from fc_jax.config import load_config
    from fc_jax.models import reward, vae
    from fc_jax.training import distill
    from fc_jax.training.setup import setup
    from fc_jax.training.sharding import batch_axis_size, logical_rules, make_mesh

    cfg = load_config("gr_dmd")
    cfg.train.global_batch = batch_axis_size(make_mesh(mesh_sizes), logical_rules(cfg))  # one sample per shard
    s = setup(cfg, mesh_sizes=mesh_sizes)
    clip = reward.CLIPVisionConfig()
    aesthetic = distill.make_reward(vae.abstract_params(cfg), reward.aesthetic_scores(clip),
                                    reward.reward_target_shapes(clip), vae_dtype=cfg.vae.dtype) if with_reward else None
    steps = s.stage.compiled_steps(s, reward=aesthetic)
    batch = s.stage.abstract_batch(s)
    out = {"mesh": dict(s.mesh.shape), "global_batch": int(cfg.train.global_batch),
           "param_dtype": cfg.model.param_dtype, "dtype": cfg.model.dtype, "remat": cfg.model.remat_policy,
           "attention": cfg.model.attention.backend,
           "reward": "aesthetic (VAE decode + CLIP ViT-L/14 + LAION head)" if with_reward else "none"}
    for name, compiled in (("generator", steps.generator(batch)), ("critic", steps.critic(batch))):
        m = compiled.memory_analysis()
        alias = getattr(m, "alias_size_in_bytes", 0)
        out[name] = {"argument_gib": m.argument_size_in_bytes / 2**30, "temp_gib": m.temp_size_in_bytes / 2**30,
                     "peak_gib": (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - alias)
                     / 2**30}
    return out


def main(argv=None) -> None:
    cli.parse(FLAGS, "python -m fc_jax.bench distill", argv, description=__doc__.split("\n\n")[0])
    result = {"benchmark": "distill", "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    if not FLAGS.skip_times:
        result.update(teacher_forcing_step=_teacher_forcing_ms(FLAGS.repeats), gr_dmd=_gr_dmd_ms(FLAGS.repeats))
    if FLAGS.memory:
        result["gr_dmd_5b_memory"] = _memory_5b(json.loads(FLAGS.mesh), FLAGS.reward)
    emit(result)
