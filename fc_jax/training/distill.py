"""Stage 3, gradient-reweighted DMD with a self-forcing rollout (REFERENCE §5): its state and pure functions
(the stage plug-in that trains them is `fc_jax.training.stages.gr_dmd`).

Three copies of the one `WanDiT`: the generator (the causal student, from stage 2), the critic or fake score (from
the stage-1 teacher, trained) and the real score (the stage-1 teacher, frozen, kept outside the state). One
iteration = a generator step every `generator_every`-th iteration (the first included), then a critic step:

- rollout: prefill [reference, garment] at t = 0 into a fresh KV cache, generate `num_chunks` chunks of 3 latents
  with the few-step schedule; one exit step per rollout (drawn on the host, `exit_steps_for`, and passed to the
  compiled steps as an argument: one program serves every exit step) is the only forward with gradient
  (`fc_jax.training.rollout`: the text path and, by default, a straight-through gradient across chunks);
- batches: the generator and the critic step each draw their own batch and exit step (the authors' trainer,
  `trainer/distill_ic.py` `fwdbwd_one_step`), or share one with `config.distill.shared_draws`;
- generator: t ~ U[0, 1000) per video, shifted, clamped to [20, 980]; `x_t = add_noise(sg(x), ε, t)`; real x0 =
  guided teacher (text-only drop: the negative context, reference and garment kept), fake x0 = conditional critic;
  rewards of the decoded frames (no gradient) weight the frames (`fc_jax.losses.gr_dmd_loss`); without a reward,
  plain `dmd_loss`;
- critic: flow MSE on the no-grad rollout at an independently drawn t of the same law, conditions at t = 0.

Models are fed t truncated to an integer; `add_noise` and the x0 conversion use σ of the nearest training-table
entry (`flow.table_sigma`, the authors' scheduler lookup). The rollout's commit pass sees the chunk noised to the
table's smallest σ (0.00498 at shift 5) with `config.distill.commit_noise="table"`: the authors' training rollout
adds noise at its `context_noise` t = 0, which that lookup turns into the table's last entry (their streaming
inference commits the clean chunk, as `"none"` does here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fc_jax import flow, kv_cache
from fc_jax.losses import dmd_loss, reward_weights, weighted_dmd_loss
from fc_jax.models import dit
from fc_jax.training.rollout import self_forcing_rollout
from fc_jax.training.sharding import Rules, replicated, tree_shardings
from fc_jax.training.state import init_inputs, update_ema

@dataclasses.dataclass(frozen=True)
class LatentReward:
    """A per-frame reward on latents: `fn(params, latents [B, F, h, w, C]) -> [B, 4F − 3]` (one score per decoded
    frame, no gradient needed). `params` go to the compiled generator step as an argument, replicated on the mesh,
    never baked into the program as constants."""

    fn: Callable[[Any, jax.Array], jax.Array]
    params: Any


@flax.struct.dataclass
class DistillState:
    """step: int32 [] iterations done (a critic step each); rng: raw key data, iteration k draws from
    fold_in(rng, k); ema: the generator's EMA parameters."""

    step: jax.Array
    generator: Any
    critic: Any
    generator_opt: Any
    critic_opt: Any
    ema: Any
    rng: jax.Array


def _boxed_state(model, tx_gen, tx_critic, seed: int) -> DistillState:
    params = model.init(jax.random.key(seed), *init_inputs(model))["params"]
    return DistillState(jnp.zeros((), jnp.int32), params, params, tx_gen.init(params), tx_critic.init(params),
                        params, jax.random.key_data(jax.random.key(seed)))


def state_shardings(model, tx_gen, tx_critic, mesh, rules: Rules) -> tuple[DistillState, DistillState]:
    """(abstract state: ShapeDtypeStructs with their shardings, the NamedSharding tree); every parameter copy and
    optimizer moment laid out like stage 1's parameters."""
    boxed = jax.eval_shape(lambda: _boxed_state(model, tx_gen, tx_critic, 0))
    shardings = tree_shardings(boxed, mesh, rules).replace(step=replicated(mesh), rng=replicated(mesh))
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed),
                            shardings)
    return abstract, shardings


def init_state(tx_gen, tx_critic, shardings: DistillState, generator, teacher, seed: int) -> DistillState:
    """A fresh state in its sharded layout: generator (and its EMA) <- `generator`, critic <- `teacher`."""

    def init(generator, teacher):
        copy = lambda tree: jax.tree.map(jnp.copy, tree)  # distinct buffers: the state is donated leaf by leaf
        return DistillState(jnp.zeros((), jnp.int32), generator, copy(teacher), tx_gen.init(generator),
                            tx_critic.init(teacher), copy(generator), jax.random.key_data(jax.random.key(seed)))

    return jax.jit(init, in_shardings=(shardings.generator, shardings.critic), out_shardings=shardings)(
        generator, teacher)


def sample_score_timesteps(key, batch: int, shift: float, t_min: float = 20.0, t_max: float = 980.0):
    """t ~ U{0..999} per video, shifted, clamped to [t_min, t_max]: [B] float32 (the authors' DMD / critic t)."""
    u = jax.random.randint(key, (batch,), 0, flow.NUM_TRAIN_TIMESTEPS).astype(jnp.float32)
    t = flow.shift_sigma(u / flow.NUM_TRAIN_TIMESTEPS, shift) * flow.NUM_TRAIN_TIMESTEPS
    return jnp.clip(t, t_min, t_max)


def exit_steps_for(seed: int, step: int, steps: int, shared: bool) -> tuple[int, int]:
    """(generator's, critic's) rollout exit step of iteration `step`, each in [0, steps), drawn on the host from
    (seed, step): a resumed run draws the same as an uninterrupted one, and every process the same. `shared`:
    one draw for both (else each rollout draws its own, as the authors' trainer)."""
    draw = lambda role: int(np.random.default_rng([seed, step, 0xE1, role]).integers(steps))
    generator = draw(0)
    return generator, generator if shared else draw(1)


class IterationBatches(NamedTuple):
    """The batches of one iteration, each {reference, garment, context, negative_context}: the generator step's
    and the critic step's (one batch twice with `config.distill.shared_draws`)."""

    generator: dict
    critic: dict


def _x0(model, params, batch, noisy, t, sigma, context):
    v = dit.in_context_forward(model, params, batch["reference"], batch["garment"], noisy, jnp.floor(t), context)
    return flow.x0_from_flow(noisy, v.astype(jnp.float32), t, sigma)


CROSS_CHUNK_GRADIENTS = ("straight_through", "none")  # config.distill.cross_chunk_gradient (see rollout.py)
COMMIT_NOISES = ("table", "none")  # config.distill.commit_noise (see the module docstring)


class Distiller:
    """The stage's pure functions for one model and config. `reward` None: plain DMD."""

    def __init__(self, model: dit.WanDiT, config, reward: LatentReward | None = None):
        d = config.distill
        self.model, self.reward = model, reward
        self.shift, self.guidance = float(config.sampling.shift), float(d.guidance_scale)
        self.num_chunks, self.temperature = int(d.num_chunks), float(d.temperature)
        self.ema_decay, self.ema_start = float(d.ema_decay), int(d.ema_start)
        self.timesteps, self.sigmas = (jnp.asarray(a, jnp.float32) for a in
                                       flow.student_schedule(config.sampling.student_timesteps, self.shift))
        if d.cross_chunk_gradient not in CROSS_CHUNK_GRADIENTS:
            raise ValueError(f"config.distill.cross_chunk_gradient {d.cross_chunk_gradient!r}: expected one of "
                             f"{CROSS_CHUNK_GRADIENTS}")
        self.straight_through = d.cross_chunk_gradient == "straight_through"
        if d.commit_noise not in COMMIT_NOISES:
            raise ValueError(f"config.distill.commit_noise {d.commit_noise!r}: expected one of {COMMIT_NOISES}")
        self.commit_sigma = float(flow.table_sigma(0.0, self.shift)) if d.commit_noise == "table" else 0.0
        self.config = config

    def rollout(self, params, batch, key, exit_step, gradient: bool = True):
        """Student samples [B, num_chunks·chunk, h, w, C] (gradient through the exit-step forwards only; none and
        one forward per chunk less with `gradient=False`)."""
        ref = batch["reference"].astype(jnp.float32)
        b, _, h, w, _ = ref.shape
        spec = kv_cache.CacheSpec.from_config(self.config, h, w)
        cache = kv_cache.init_cache(self.model, spec, b, h, w)
        cache = kv_cache.prefill(self.model, jax.lax.stop_gradient(params), cache, ref,
                                 batch["garment"].astype(jnp.float32), batch["context"])
        x, _ = self_forcing_rollout(self.model, params, cache, key, self.timesteps, self.sigmas,
                                    num_chunks=self.num_chunks, exit_step=exit_step, gradient=gradient,
                                    context=batch["context"], straight_through=self.straight_through,
                                    commit_sigma=self.commit_sigma)
        return x

    def generator_loss(self, generator, critic, real, reward_params, batch, key, exit_step):
        """(mean (GR-)DMD loss, aux) of one rollout batch; `reward_params` those of `self.reward`. aux: dmd_gap,
        and with a reward its mean and `weight_max_over_min` (the batch's mean ratio of the largest frame weight to
        the smallest: 1 is plain DMD)."""
        key_roll, key_t, key_noise = jax.random.split(key, 3)
        x = self.rollout(generator, batch, key_roll, exit_step)
        b = x.shape[0]
        t = sample_score_timesteps(key_t, b, self.shift)
        sigma = flow.table_sigma(t, self.shift)
        noisy = flow.add_noise(jax.lax.stop_gradient(x), jax.random.normal(key_noise, x.shape), t, sigma)
        real_cond = _x0(self.model, real, batch, noisy, t, sigma, batch["context"])
        real_uncond = _x0(self.model, real, batch, noisy, t, sigma, batch["negative_context"])
        real_x0 = real_cond + self.guidance * (real_cond - real_uncond)
        fake_x0 = _x0(self.model, jax.lax.stop_gradient(critic), batch, noisy, t, sigma, batch["context"])
        aux = {"dmd_gap": jnp.abs(real_x0 - fake_x0).mean()}
        if self.reward is None:
            losses = dmd_loss(x, real_x0, fake_x0)
        else:
            rewards = jax.lax.stop_gradient(self.reward.fn(reward_params, jax.lax.stop_gradient(x)))
            w = reward_weights(rewards, x.shape[1], int(self.config.student.chunk_frames), self.temperature)
            losses = weighted_dmd_loss(x, real_x0, fake_x0, w)  # GR-DMD (`gr_dmd_loss`), its weights kept
            # How far the reweighting is from plain DMD: 1 when every frame weighs the same.
            aux.update(reward=rewards.mean(), weight_max_over_min=(w.max(axis=1) / w.min(axis=1)).mean())
        return losses.mean(), aux

    def critic_loss(self, critic, generator, batch, key, exit_step):
        """Flow MSE of the critic on a no-grad rollout at a fresh shifted t (conditions at t = 0)."""
        key_roll, key_t, key_noise = jax.random.split(key, 3)
        x = jax.lax.stop_gradient(self.rollout(generator, batch, key_roll, exit_step, gradient=False))
        t = sample_score_timesteps(key_t, x.shape[0], self.shift)
        noise = jax.random.normal(key_noise, x.shape)
        noisy = flow.add_noise(x, noise, t, flow.table_sigma(t, self.shift))
        v = dit.in_context_forward(self.model, critic, batch["reference"], batch["garment"], noisy, jnp.floor(t),
                                   batch["context"])
        return jnp.mean(jnp.square(v.astype(jnp.float32) - flow.flow_target(x, noise)))

    def generator_step(self, tx: optax.GradientTransformation):
        """`step(state, real, reward_params, batch, exit_step) -> (state, metrics)`: one generator update and its
        EMA (step unchanged); exit_step an int32 scalar."""

        def step(state: DistillState, real, reward_params, batch, exit_step):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step), 0)
            (loss, aux), grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
                state.generator, state.critic, real, reward_params, batch, key, exit_step)
            grad_norm = optax.global_norm(grads)
            updates, opt = tx.update(grads, state.generator_opt, state.generator)
            params = optax.apply_updates(state.generator, updates)
            ema = update_ema(state.ema, params, state.step, self.ema_decay, self.ema_start)
            new = state.replace(generator=params, generator_opt=opt, ema=ema)
            return _guarded(new, state, loss, grad_norm, {"generator/loss": loss, "generator/grad_norm": grad_norm,
                                                          **{f"generator/{k}": v for k, v in aux.items()}})

        return step

    def critic_step(self, tx: optax.GradientTransformation):
        """`step(state, batch, exit_step) -> (state, metrics)`: one critic update; advances `state.step`."""

        def step(state: DistillState, batch, exit_step):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step), 1)
            loss, grads = jax.value_and_grad(self.critic_loss)(state.critic, state.generator, batch, key, exit_step)
            grad_norm = optax.global_norm(grads)
            updates, opt = tx.update(grads, state.critic_opt, state.critic)
            new = state.replace(step=state.step + 1, critic=optax.apply_updates(state.critic, updates),
                                critic_opt=opt)
            return _guarded(new, state, loss, grad_norm, {"critic/loss": loss, "critic/grad_norm": grad_norm})

        return step


def _guarded(new, old, loss, grad_norm, metrics):
    """Keep `old` when the loss or gradient norm is not finite (nothing poisoned is kept); report `finite`."""
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old), {**metrics, "finite": finite}


def make_reward(vae_params, frame_scores, frame_params, vae_dtype=None) -> LatentReward:
    """latents [B, F, h, w, C] -> decode (Wan VAE) -> frames [B, 4F − 3, H, W, 3] in [-1, 1] ->
    `frame_scores(frame_params, frames [N, H, W, 3]) -> [N]` per frame -> [B, 4F − 3]. Parameters may be arrays
    or ShapeDtypeStructs (ahead-of-time compiles)."""
    from fc_jax.models import vae

    def fn(params, latents):
        frames = vae._decode(params["vae"], latents, vae_dtype)
        b, p = frames.shape[:2]
        return frame_scores(params["frame"], frames.reshape((b * p,) + frames.shape[2:])).reshape(b, p)

    return LatentReward(fn, {"vae": vae_params, "frame": frame_params})


class CompiledSteps:
    """The generator and critic steps compiled ahead of time for a mesh (state donated, in/out shardings), each
    compiled on first use per batch shape; the exit step is an argument, so one program serves every exit step.
    The reward's parameters (`reward_params`) are replicated on the mesh; they are put there here unless they are
    ShapeDtypeStructs (memory benchmarks)."""

    def __init__(self, distiller: Distiller, tx_gen, tx_critic, abstract, shardings, batch_shardings, mesh, rules):
        self._args = (distiller, tx_gen, tx_critic, abstract, shardings, batch_shardings, mesh, rules)
        self._cache: dict = {}
        params = None if distiller.reward is None else distiller.reward.params
        self._reward_shardings = jax.tree.map(lambda _: replicated(mesh), params)
        self._reward_abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params,
                                             self._reward_shardings)
        concrete = all(isinstance(x, jax.Array | np.ndarray) for x in jax.tree.leaves(params))
        self.reward_params = jax.device_put(params, self._reward_shardings) if concrete else self._reward_abstract

    def exit_step(self, value: int) -> jax.Array:
        """The exit step as the compiled steps take it: an int32 scalar replicated on the mesh."""
        return jax.device_put(np.int32(value), replicated(self._args[6]))

    def generator(self, batch):
        """`run(state, real, reward_params, batch, exit_step) -> (state, metrics)` for batches shaped as `batch`."""
        return self._get("generator", batch)

    def critic(self, batch):
        """`run(state, batch, exit_step) -> (state, metrics)` for batches shaped as `batch`."""
        return self._get("critic", batch)

    def _get(self, which: str, batch):
        from fc_jax.training.sharding import activation_sharding

        distiller, tx_gen, tx_critic, abstract, shardings, batch_sh, mesh, rules = self._args
        shapes = {k: v.shape for k, v in batch.items()}
        key = (which, tuple(sorted(shapes.items())))
        if key not in self._cache:
            batch_abs = {k: jax.ShapeDtypeStruct(s, np.float32, sharding=batch_sh[k]) for k, s in shapes.items()}
            exit_abs = jax.ShapeDtypeStruct((), np.int32, sharding=replicated(mesh))
            out = (shardings, replicated(mesh))
            if which == "generator":
                fn = jax.jit(distiller.generator_step(tx_gen),
                             in_shardings=(shardings, shardings.generator, self._reward_shardings, batch_sh,
                                           replicated(mesh)),
                             out_shardings=out, donate_argnums=(0,))
                args = (abstract, abstract.generator, self._reward_abstract, batch_abs, exit_abs)
            else:
                fn = jax.jit(distiller.critic_step(tx_critic), in_shardings=(shardings, batch_sh, replicated(mesh)),
                             out_shardings=out, donate_argnums=(0,))
                args = (abstract, batch_abs, exit_abs)
            with activation_sharding(mesh, rules):
                self._cache[key] = fn.lower(*args).compile()
        return self._cache[key]


def iteration(steps: CompiledSteps, state: DistillState, real, batches: IterationBatches, *, seed: int,
              generator_every: int, num_student_steps: int, shared_draws: bool):
    """One iteration on the host: the generator step on `batches.generator` when `state.step % generator_every ==
    0`, then the critic step on `batches.critic`, each with its exit step (`exit_steps_for`; one for both with
    `shared_draws`). Returns (state, metrics as numpy)."""
    step = int(jax.device_get(state.step))
    exit_gen, exit_critic = exit_steps_for(seed, step, num_student_steps, shared_draws)
    metrics = {}
    if step % generator_every == 0:
        state, m = steps.generator(batches.generator)(state, real, steps.reward_params, batches.generator,
                                                      steps.exit_step(exit_gen))
        metrics.update(jax.device_get(m))
        if not metrics["finite"]:
            return state, metrics
    state, m = steps.critic(batches.critic)(state, batches.critic, steps.exit_step(exit_critic))
    m = jax.device_get(m)
    metrics["finite"] = bool(m.pop("finite")) and bool(metrics.get("finite", True))
    metrics.update(m)
    return state, metrics
