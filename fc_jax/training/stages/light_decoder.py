"""The light-decoder stage: `fc_jax.models.light_decoder` distilled from a VAE's decoder (issue "a light streaming
decoder"), on pixel clips of triplet videos encoded on the fly.

Per clip x [B, F, H, W, 3] (uint8; `fc_jax.data.sources.clip_batches` with `light_decoder_train.clip_frames`
and `.crop`): the frozen VAE of `light_decoder_train.teacher` (a VAE parameter folder) encodes the posterior
mean z (normalised latents, what the DiT makes) and decodes it to the teacher's frames x_vae (one pass each, the
streaming values); both are computed on the device when a batch arrives (`device_batch`), so the step holds
only the light decoder. With `light_decoder_train.latent_noise` = s > 0, each training clip's z is perturbed first,
z + σ·n with σ ~ U(0, s) per clip and n standard normal, and x_vae is the VAE's decode of the perturbed z: the
light decoder then follows the VAE off the encoder's latents too, where a sampler's latents lie (evaluation
stays on the clean z). loss = pix(light(z), x_vae) + `real_weight` · pix(light(z), x), with
pix(a, b) = mean |a − b| + `mse_weight` · mean (a − b)². Evaluation: the loss, and the PSNR of the clipped light
decode against the teacher's frames (`eval/psnr_vs_full_db`) and the real ones (`eval/psnr_db`) on whole eval
videos.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.data import sources
from fc_jax.models import light_decoder, vae
from fc_jax.training.optim import make_optimizer
from fc_jax.training.sharding import activation_sharding, replicated
from fc_jax.training.stage import SingleNetworkStage, StageData
from fc_jax.training.stages.vae import open_triplet_data, to_pixels
from fc_jax.training.state import fresh_state

LATENT_AXES = (None, "batch", "frames", None, None, "channels")


def pixel_loss(pred, target, mse_weight: float) -> jax.Array:
    error = pred - target
    return jnp.mean(jnp.abs(error)) + mse_weight * jnp.mean(jnp.square(error))


def distill_loss(params, batch, real_weight: float, mse_weight: float) -> jax.Array:
    """The loss of one micro-batch {latents [B, f, h, w, 48], teacher [B, F, H, W, 3] in [-1, 1], video uint8}."""
    pred = light_decoder.decode_raw(params, batch["latents"])
    return pixel_loss(pred, batch["teacher"], mse_weight) + real_weight * pixel_loss(
        pred, to_pixels(batch["video"]), mse_weight)


def teacher_targets(teacher, video_u8, latent_noise: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Clips uint8 [B, 4k+1, H, W, 3] -> (normalised posterior-mean latents [B, k+1, H/16, W/16, 48], the VAE
    decoder's frames of them [B, 4k+1, H, W, 3], clipped to [-1, 1]). `latent_noise` > 0: the latents are
    perturbed by σ·n, σ ~ U(0, latent_noise) per clip (the key drawn from the clips' pixels, so a resumed run
    sees the same draws), before they are decoded."""
    mu, _ = vae.posterior_moments(teacher, to_pixels(video_u8), one_pass=True)
    z = vae.normalize_latents(mu)
    if latent_noise > 0.0:
        key = jax.random.fold_in(jax.random.key(0), jnp.sum(video_u8, dtype=jnp.uint32))
        scale_key, noise_key = jax.random.split(key)
        sigma = latent_noise * jax.random.uniform(scale_key, (z.shape[0],) + (1,) * (z.ndim - 1), z.dtype)
        z = z + sigma * jax.random.normal(noise_key, z.shape, z.dtype)
        mu = vae.denormalize_latents(z)
    frames = jnp.clip(vae.decode_raw(teacher, mu, one_pass=True), -1.0, 1.0)
    return z, frames


def psnr_db(pred, target) -> jax.Array:
    """PSNR (dB, peak 255) of frames in [-1, 1]."""
    mse = jnp.mean(jnp.square((pred - target) * 127.5))
    return 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-10))


class LightDecoderStage(SingleNetworkStage):
    name = "light_decoder"
    batch_axes = {"video": LATENT_AXES, "latents": LATENT_AXES, "teacher": LATENT_AXES}

    def build_model(self, config):
        return light_decoder.LightDecoderArch.from_config(config)

    def tokens_per_sample(self, config) -> int:
        """Latent positions of one training clip."""
        frames = (int(config.light_decoder_train.clip_frames) - 1) // 4 + 1
        height, width = sources.clip_size(config, config.light_decoder_train)
        return frames * (height // 16) * (width // 16)

    def loss(self, model, config, params, batch, key) -> jax.Array:
        t = config.light_decoder_train
        return distill_loss(params, batch, float(t.real_weight), float(t.mse_weight))

    def teacher(self, setup):
        """The frozen VAE (loaded once per setup, replicated on the mesh)."""
        if "teacher" not in setup.resources:
            from fc_jax.convert.common import load_params

            path = setup.config.light_decoder_train.teacher
            if not path or not os.path.isdir(path):
                raise ValueError(f"config.light_decoder_train.teacher {path!r}: expected a VAE parameter folder "
                                 "(python -m fc_jax.convert vae, or a tiny-world recipe's vae_params)")
            params = load_params(os.path.abspath(path))
            setup.resources["teacher"] = jax.device_put(params, replicated(setup.mesh))
        return setup.resources["teacher"]

    def state_layout(self, setup):
        """The state, replicated on the mesh (a data-parallel decoder: its parameters carry no logical axes)."""
        tx, _ = make_optimizer(setup.config.optim)
        use_ema = self._use_ema(setup.config)
        init = lambda: light_decoder.init_params(setup.config, jax.random.key(0))
        shapes = jax.eval_shape(lambda: fresh_state(init(), tx, 0, use_ema))
        shardings = jax.tree.map(lambda _: replicated(setup.mesh), shapes)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
        return abstract, shardings

    def initial_state(self, setup):
        config = setup.config
        tx, _ = make_optimizer(config.optim)
        if config.train.init_from:
            from fc_jax.convert.common import load_params

            params = load_params(config.train.init_from, setup.abstract.params)
        else:
            params = light_decoder.init_params(config, jax.random.key(config.train.seed))
        init = lambda p: fresh_state(p, tx, config.train.seed, self._use_ema(config))
        return jax.jit(init, out_shardings=setup.shardings)(params)

    def open_data(self, setup, workdir: str) -> StageData:
        self.teacher(setup)  # a missing teacher fails before any data is read
        c = setup.config
        train, skipped, eval_batches = sources.clip_batches(c, c.light_decoder_train, open_triplet_data(c),
                                                            setup.host_rows, jax.process_index(), jax.process_count())
        return StageData(iter(train), skipped, eval_batches)

    def _targets(self, setup, latent_noise: float):
        """The jitted teacher: video [accum, micro, ...] -> (latents, teacher frames), sharded as the batch."""
        name = f"targets@{latent_noise}"
        if name not in setup.resources:
            fn = lambda teacher, video: jax.lax.map(lambda v: teacher_targets(teacher, v, latent_noise), video)
            out = (setup.batch_shardings["latents"], setup.batch_shardings["teacher"])
            setup.resources[name] = jax.jit(fn, out_shardings=out)
        return setup.resources[name]

    def device_batch(self, setup, local: dict) -> dict:
        """Host pixel clips -> the global batch {video, latents, teacher} (the teacher runs on the devices), the
        latents perturbed by `light_decoder_train.latent_noise`."""
        return self._batch(setup, local, float(setup.config.light_decoder_train.get("latent_noise", 0.0)))

    def eval_batch(self, setup, local: dict) -> dict:
        """As `device_batch`, on the clean latents."""
        return self._batch(setup, local, 0.0)

    def _batch(self, setup, local: dict, latent_noise: float) -> dict:
        batch = super().device_batch(setup, {"video": local["video"]})
        with activation_sharding(setup.mesh, setup.rules):
            latents, frames = self._targets(setup, latent_noise)(self.teacher(setup), batch["video"])
        return {**batch, "latents": latents, "teacher": frames}

    def abstract_batch(self, setup) -> dict:
        c = setup.config
        frames = int(c.light_decoder_train.clip_frames)
        height, width = sources.clip_size(c, c.light_decoder_train)
        lead = (setup.accum, setup.micro)
        shapes = {"video": ((*lead, frames, height, width, 3), np.uint8),
                  "latents": ((*lead, (frames - 1) // 4 + 1, height // 16, width // 16, light_decoder.Z_DIM),
                              np.float32),
                  "teacher": ((*lead, frames, height, width, 3), np.float32)}
        return {k: jax.ShapeDtypeStruct(s, d, sharding=setup.batch_shardings[k]) for k, (s, d) in shapes.items()}

    def eval_hooks(self, setup, data: StageData):
        """`eval/loss`, and the PSNR against the teacher's frames and the real ones (EMA parameters where there
        are some) on the fixed evaluation videos."""
        hooks = super().eval_hooks(setup, data)
        if not data.eval_batches:
            return hooks

        def scores(params, micro):
            pred = jnp.clip(light_decoder.decode_raw(params, micro["latents"]), -1.0, 1.0)
            return psnr_db(pred, micro["teacher"]), psnr_db(pred, to_pixels(micro["video"]))

        jitted = jax.jit(lambda p, b: jax.tree.map(jnp.mean, jax.lax.map(lambda m: scores(p, m), b)),
                         out_shardings=replicated(setup.mesh))
        batches = [self.eval_batch(setup, b) for b in data.eval_batches]

        def psnr(step, state):
            params = state.params if state.ema_params is None else state.ema_params
            with activation_sharding(setup.mesh, setup.rules):
                values = np.array([jax.device_get(jitted(params, b)) for b in batches])
            return {"eval/psnr_vs_full_db": float(values[:, 0].mean()), "eval/psnr_db": float(values[:, 1].mean())}

        return hooks + [psnr]


STAGE = LightDecoderStage()
