"""Stage 3, gradient-reweighted DMD with a self-forcing rollout, as a driver stage (the math is
`fc_jax.training.distill`).

State `distill.DistillState` (generator, critic, their optimizer states, the generator's EMA). At step 0 the
generator (and its EMA) come from `config.distill.generator_from` (stage 2), the critic and the frozen real score
from `config.distill.teacher_from` (stage 1); without them (smoke runs) a random teacher seeded by
`config.train.seed` is both. Batches: the reference, garment and context of stage 1's latent triplets and the
negative prompt's embedding as the real score's negative context (`fc_jax.data.sources.negative_prompt`), [B, ...]
(no accumulation). One driver step is one iteration (`distill.iteration`: a generator step every
`distill.generator_every`-th, then a critic step): two programs, compiled before the first step; the rollout's exit
step is their argument. The generator and the critic step each take their own batch (the authors' trainer), so a
driver step reads 2 x `train.global_batch` rows (the generator's half unused on critic-only iterations) and the
grain iterator saved with each checkpoint has advanced by both; `distill.shared_draws` shares one batch (and one
exit step) between the two steps.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.models import dit
from fc_jax.training import distill
from fc_jax.training.optim import make_optimizer
from fc_jax.training.sharding import global_batch
from fc_jax.training.stage import Stage, StageData, in_context_tokens
from fc_jax.training.state import load_pretrained

_DEFAULT = object()


def _load(path: str, config, abstract_params, what: str):
    if not path:
        return None
    try:
        return load_pretrained(path, config, abstract_params)
    except (OSError, ValueError) as e:
        raise ValueError(f"config.distill.{what} = {path!r}: could not load DiT parameters from it: {e}") from e


REWARDS = ("aesthetic", "palette_purity", "none")


def configured_reward(config) -> distill.LatentReward | None:
    """The reward of `config.distill.reward` on latents, or None for plain DMD ("none"): VAE decode
    (`distill.vae_from`) -> per-frame scores, "aesthetic" (CLIP ViT-L/14 + LAION head, `distill.reward_from` an
    orbax folder) or "palette_purity" (`fc_jax.models.reward.palette_purity_scores`, its palette the .npz
    `distill.reward_from`: the tiny world's VQ score)."""
    d = config.distill
    if d.reward == "none":
        return None
    if d.reward not in REWARDS:
        raise ValueError(f"config.distill.reward {d.reward!r}: expected one of {REWARDS}")
    if not d.vae_from or not d.reward_from:
        raise ValueError(f"config.distill.reward={d.reward!r} needs config.distill.vae_from and reward_from (an fc_jax "
                         "orbax folder written by `python -m fc_jax.convert`, and the reward's parameters); or set "
                         "reward='none' for plain DMD")
    from fc_jax.convert.common import load_params
    from fc_jax.models import reward, vae

    vae_params = load_params(os.path.abspath(d.vae_from), vae.abstract_params(config))
    if d.reward == "palette_purity":
        with np.load(d.reward_from) as palette:
            params = {k: jnp.asarray(palette[k], jnp.float32) for k in ("points", "segments", "sigma")}
        return distill.make_reward(vae_params, reward.palette_purity_scores, params, vae_dtype=config.vae.dtype)
    clip = reward.CLIPVisionConfig()
    return distill.make_reward(vae_params, reward.aesthetic_scores(clip),
                               load_params(d.reward_from, reward.reward_target_shapes(clip)),
                               vae_dtype=config.vae.dtype)


class GRDMD(Stage):
    name = "gr_dmd"
    batch_axes = {
        "reference": ("batch", "frames", None, None, "channels"),
        "garment": ("batch", "frames", None, None, "channels"),
        "context": ("batch", None, None),
        "negative_context": ("batch", None, None),
    }
    exports = ("ema", "generator", "critic")

    def tokens_per_sample(self, config) -> int:
        return in_context_tokens(config)

    def optimizers(self, config):
        """(generator optimizer, critic optimizer) of the config."""
        return make_optimizer(config.optim)[0], make_optimizer(config.critic_optim)[0]

    def state_layout(self, setup):
        return distill.state_shardings(setup.model, *self.optimizers(setup.config), setup.mesh, setup.rules)

    def teacher(self, setup):
        """The stage-1 teacher, laid out like the critic (loaded once per setup): the critic's init and the
        frozen real score."""
        if "teacher" not in setup.resources:
            config = setup.config
            teacher = _load(config.distill.teacher_from, config, setup.abstract.critic, "teacher_from")
            if teacher is None:  # smoke runs: a random teacher
                teacher = jax.jit(lambda: dit.init_params(setup.model, jax.random.key(config.train.seed)),
                                  out_shardings=setup.shardings.critic)()
            setup.resources["teacher"] = teacher
        return setup.resources["teacher"]

    def initial_state(self, setup):
        config, teacher = setup.config, self.teacher(setup)
        generator = _load(config.distill.generator_from, config, setup.abstract.generator, "generator_from")
        generator = jax.tree.map(jnp.copy, teacher) if generator is None else generator
        return distill.init_state(*self.optimizers(config), setup.shardings, generator, teacher,
                                  int(config.train.seed))

    def _draws(self, config) -> int:
        """Batches per iteration: 1 with `distill.shared_draws`, else 2 (the generator's and the critic's)."""
        return 1 if config.distill.shared_draws else 2

    def open_data(self, setup, workdir: str) -> StageData:
        from fc_jax.data import sources

        config = setup.config
        builder = sources.open_latent_data(config, workdir)
        train, skipped, _ = sources.latent_batches(config, builder, self._draws(config) * setup.host_rows,
                                                   jax.process_index(), jax.process_count())
        negative = sources.negative_prompt(config, builder)
        rows = np.zeros((setup.host_rows, config.model.text_len, negative.shape[1]), np.float32)
        rows[:, : negative.shape[0]] = negative
        setup.resources["negative_context"] = rows
        return StageData(iter(train), skipped, [])

    def device_batch(self, setup, local: dict) -> distill.IterationBatches:
        """Per-process rows [draws x host_rows, ...] -> (the generator step's, the critic step's) global batches."""
        n = setup.host_rows

        def batch(rows: slice) -> dict:
            arrays = {k: local[k][rows] for k in ("reference", "garment", "context")}
            arrays["negative_context"] = setup.resources["negative_context"]
            return global_batch(arrays, setup.batch_shardings)

        generator = batch(slice(0, n))
        critic = generator if self._draws(setup.config) == 1 else batch(slice(n, 2 * n))
        return distill.IterationBatches(generator, critic)

    def abstract_batch(self, setup) -> dict:
        config = setup.config
        b = int(config.train.global_batch)
        h, w, c = config.video.height // 16, config.video.width // 16, config.model.in_channels
        text = (b, config.model.text_len, config.model.text_dim)
        shapes = {"reference": (b, 1, h, w, c), "garment": (b, 1, h, w, c), "context": text, "negative_context": text}
        return {k: jax.ShapeDtypeStruct(s, np.float32, sharding=setup.batch_shardings[k]) for k, s in shapes.items()}

    def compiled_steps(self, setup, reward=_DEFAULT) -> distill.CompiledSteps:
        """The generator and critic programs (compiled on first use per batch shape); `reward` replaces the
        configured one (a `distill.LatentReward`, e.g. with abstract parameters for memory benchmarks, or None)."""
        reward = configured_reward(setup.config) if reward is _DEFAULT else reward
        return distill.CompiledSteps(distill.Distiller(setup.model, setup.config, reward),
                                     *self.optimizers(setup.config), setup.abstract, setup.shardings,
                                     setup.batch_shardings, setup.mesh, setup.rules)

    def compile(self, setup):
        config = setup.config
        steps = self.compiled_steps(setup)
        batch = self.abstract_batch(setup)
        steps.generator(batch), steps.critic(batch)  # compiled now, so the driver's "compiling" covers them
        real = self.teacher(setup)  # never updated: the state's critic is a copy
        kwargs = dict(seed=int(config.train.seed), generator_every=int(config.distill.generator_every),
                      num_student_steps=len(config.sampling.student_timesteps),
                      shared_draws=bool(config.distill.shared_draws))
        return lambda state, batch: distill.iteration(steps, state, real, batch, **kwargs)


STAGE = GRDMD()
