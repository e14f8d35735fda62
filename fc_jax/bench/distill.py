"""`python -m fc_jax.bench distill [--repeats N] [--memory]`: per-iteration times on this machine of the tiny
stage-2 step (teacher forcing, chunked attention) and the tiny stage-3 steps (generator: rollout + real/fake
scores + update; critic: no-grad rollout + flow loss + update), single device, compiled once, state donated.

`--memory` adds the ahead-of-time compiled per-device memory of the 5B stage-3 generator and critic steps
(configs/gr_dmd.py; three 5B networks, and in the generator step the VAE decode + aesthetic reward unless
`--no-reward`) on `--mesh` over fake CPU devices, nothing allocated; run it as
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m fc_jax.bench distill --memory
(the flag must be set before jax starts; the bf16-upcast flag of fc_jax.bench.memory is added). Prints one JSON
object."""

from __future__ import annotations

import argparse
import json
import os
import runpy

from fc_jax.bench import memory as _memory  # noqa: F401  (sets the XLA flag that keeps CPU-only bf16 upcasts out)

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.bench.common import emit, median_ms

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _config(name: str):
    return runpy.run_path(os.path.join(_CONFIGS, name))["get_config"]("tiny")


def _teacher_forcing_ms(repeats: int) -> dict:
    from fc_jax.models import dit
    from fc_jax.training import teacher_forcing
    from fc_jax.training.optim import make_optimizer
    from fc_jax.training.state import TrainState
    from fc_jax.training.step import make_train_step

    cfg = _config("teacher_forcing.py")
    model = dit.build_model(cfg)
    tx, schedule = make_optimizer(cfg.optim)
    b, f, h, w, c = int(cfg.train.global_batch), (cfg.video.num_frames - 1) // 4 + 1, 4, 2, cfg.model.in_channels
    rng = np.random.default_rng(0)
    batch = {"video": rng.standard_normal((1, b, f, h, w, c), np.float32),
             "reference": rng.standard_normal((1, b, 1, h, w, c), np.float32),
             "garment": rng.standard_normal((1, b, 1, h, w, c), np.float32),
             "context": rng.standard_normal((1, b, cfg.model.text_len, cfg.model.text_dim), np.float32)}
    params = dit.init_params(model, jax.random.key(0))
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(jax.random.key(0)))
    step = jax.jit(make_train_step(lambda p, x, k: teacher_forcing.loss_fn(model, cfg, p, x, k), tx, schedule),
                   donate_argnums=(0,))
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], batch)
        return metrics

    return {"batch": b, "latent_frames": f, "tokens": 2 * (f + 2) * (h // 2) * (w // 2),
            "attention_backend": cfg.model.attention.backend, "ms": median_ms(run, repeats)}


def _gr_dmd_ms(repeats: int) -> dict:
    from fc_jax.models import dit
    from fc_jax.training import distill, sharding
    from fc_jax.training.optim import make_optimizer

    cfg = _config("gr_dmd.py")
    rules = sharding.logical_rules(cfg)
    model = dit.build_model(cfg)
    tx_gen, _ = make_optimizer(cfg.optim)
    tx_critic, _ = make_optimizer(cfg.critic_optim)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1, sequence=1), jax.devices()[:1])
    abstract, sh = distill.state_shardings(model, tx_gen, tx_critic, mesh, rules)
    params = dit.init_params(model, jax.random.key(0))
    state = distill.init_state(tx_gen, tx_critic, sh, params, params, 0)
    real = jax.tree.map(jnp.copy, params)
    b, h, w, c = int(cfg.train.global_batch), 4, 2, cfg.model.in_channels
    rng = np.random.default_rng(0)
    batch = {"reference": rng.standard_normal((b, 1, h, w, c), np.float32),
             "garment": rng.standard_normal((b, 1, h, w, c), np.float32),
             "context": rng.standard_normal((b, cfg.model.text_len, cfg.model.text_dim), np.float32),
             "negative_context": np.zeros((b, cfg.model.text_len, cfg.model.text_dim), np.float32)}
    bsh = {k: sharding.logical_sharding(v, mesh, rules) for k, v in distill.BATCH_AXES.items()}
    batch = sharding.global_batch(batch, bsh)
    steps = distill.CompiledSteps(distill.Distiller(model, cfg), tx_gen, tx_critic, abstract, sh, bsh, mesh, rules)
    out = {"batch": b, "chunks": int(cfg.distill.num_chunks), "reward": "none"}
    holder = [state]
    for exit_step in (0, 3):
        gen, critic = steps.generator(exit_step, batch), steps.critic(exit_step, batch)

        def run_gen():
            holder[0], m = gen(holder[0], real, steps.reward_params, batch)
            return m

        def run_critic():
            holder[0], m = critic(holder[0], batch)
            return m

        out[f"generator_ms_exit{exit_step}"] = median_ms(run_gen, repeats)
        out[f"critic_ms_exit{exit_step}"] = median_ms(run_critic, repeats)
    # An iteration is a critic step, plus a generator step every `generator_every`-th (exit step uniform).
    every = int(cfg.distill.generator_every)
    mean = lambda k: (out[f"{k}_ms_exit0"] + out[f"{k}_ms_exit3"]) / 2
    out["mean_iteration_ms"] = mean("critic") + mean("generator") / every
    return out


def _memory_5b(mesh_sizes: dict, exit_step: int, with_reward: bool) -> dict:
    """Compiled per-device memory of the 5B generator and critic steps (batch: one sample per batch shard), the
    generator's with the aesthetic reward in the loop (VAE decode of the rollout + CLIP ViT-L/14 + LAION head)."""
    from fc_jax.models import dit
    from fc_jax.training import distill, sharding
    from fc_jax.training.optim import make_optimizer

    from fc_jax.models import reward, vae

    cfg = runpy.run_path(os.path.join(_CONFIGS, "gr_dmd.py"))["get_config"]()
    rules = sharding.logical_rules(cfg)
    mesh = sharding.make_mesh(mesh_sizes)
    model = dit.build_model(cfg)
    tx_gen, _ = make_optimizer(cfg.optim)
    tx_critic, _ = make_optimizer(cfg.critic_optim)
    abstract, sh = distill.state_shardings(model, tx_gen, tx_critic, mesh, rules)
    b = sharding.batch_axis_size(mesh, rules)
    h, w, c = cfg.video.height // 16, cfg.video.width // 16, cfg.model.in_channels
    shapes = {"reference": (b, 1, h, w, c), "garment": (b, 1, h, w, c),
              "context": (b, cfg.model.text_len, cfg.model.text_dim),
              "negative_context": (b, cfg.model.text_len, cfg.model.text_dim)}
    bsh = {k: sharding.logical_sharding(v, mesh, rules) for k, v in distill.BATCH_AXES.items()}
    clip = reward.CLIPVisionConfig()
    aesthetic = distill.make_reward(vae.abstract_params(cfg), reward.aesthetic_scores(clip),
                                    reward.reward_target_shapes(clip), vae_dtype=cfg.vae.dtype) if with_reward else None
    steps = distill.CompiledSteps(distill.Distiller(model, cfg, aesthetic), tx_gen, tx_critic, abstract, sh, bsh,
                                  mesh, rules)
    batch = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in shapes.items()}
    out = {"mesh": dict(mesh.shape), "global_batch": b, "exit_step": exit_step, "param_dtype": cfg.model.param_dtype,
           "dtype": cfg.model.dtype, "remat": cfg.model.remat_policy, "attention": cfg.model.attention.backend,
           "reward": "aesthetic (VAE decode + CLIP ViT-L/14 + LAION head)" if with_reward else "none"}
    for name, compiled in (("generator", steps.generator(exit_step, batch)), ("critic", steps.critic(exit_step, batch))):
        m = compiled.memory_analysis()
        alias = getattr(m, "alias_size_in_bytes", 0)
        out[name] = {"argument_gib": m.argument_size_in_bytes / 2**30, "temp_gib": m.temp_size_in_bytes / 2**30,
                     "peak_gib": (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - alias)
                     / 2**30}
    return out


def main(argv) -> None:
    parser = argparse.ArgumentParser(prog="python -m fc_jax.bench distill")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="also the 5B AOT per-device memory")
    parser.add_argument("--mesh", default='{"data": 1, "fsdp": -1, "tensor": 1, "sequence": 1}')
    parser.add_argument("--exit-step", type=int, default=3)
    parser.add_argument("--skip-times", action="store_true")
    parser.add_argument("--no-reward", action="store_true", help="5B memory without the reward in the loop")
    args = parser.parse_args(argv)
    result = {"benchmark": "distill", "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    if not args.skip_times:
        result.update(teacher_forcing_step=_teacher_forcing_ms(args.repeats), gr_dmd=_gr_dmd_ms(args.repeats))
    if args.memory:
        result["gr_dmd_5b_memory"] = _memory_5b(json.loads(args.mesh), args.exit_step, not args.no_reward)
    emit(result)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
