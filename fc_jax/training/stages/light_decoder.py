"""The light-decoder stage: `fc_jax.models.light_decoder` distilled from a VAE's decoder (issue "a light streaming
decoder"), on pixel clips of triplet videos encoded on the fly.

Per clip x [B, F, H, W, 3] (uint8; `fc_jax.data.sources.clip_batches` with `light_decoder_train.clip_frames`
and `.crop`): the frozen VAE of `light_decoder_train.teacher` (a VAE parameter folder) encodes the posterior
mean z (normalised latents, what the DiT makes) and decodes it to the teacher's frames x_vae (one pass each, the
streaming values); both are computed on the device when a batch arrives (`device_batch`), so the step holds
only the light decoder. With `light_decoder_train.latent_noise` = s > 0, each training clip's z is perturbed first,
z + σ·n with σ ~ U(0, s) per clip and n standard normal, and x_vae is the VAE's decode of the perturbed z: the
light decoder then follows the VAE off the encoder's latents too (evaluation stays on the clean z).

The sampler's own latents: with `light_decoder_train.sampler_latents` (a .npy of clean latents a sampler made,
[N, f, h, w, 48], e.g. the tiny-world recipe's `sampler_latents` step) and `sampler_share` = s > 0, clip i of
every host batch with floor((i+1)·s) > floor(i·s) takes in place of its encoded z a window of one of the file's
first N − `sampler_eval_streams` streams (its first latent frames, a random crop of the clip's latent size; the
draws fixed by the batch's pixels, so a resumed run makes the same ones); the teacher decodes those, and such
a clip has no real frames (its real term is 0). loss = mean_i pix(light(z_i), x_vae,i) + `real_weight` ·
Σ_i r_i pix(light(z_i), x_i) / Σ_i r_i (r_i = 1 for clips of real video), with pix(a, b) = mean |a − b| +
`mse_weight` · mean (a − b)²; with `rare_colour_weight` = c > 0 both means weigh each pixel by 1 + c where its
colour is rare in the teacher's frames of its clip (under `rare_colour_share` of them; `teacher_colour_weights`),
as the VAE stage can: a small figure's colours are not drowned by the background's. Evaluation: the loss, and
the PSNR of the clipped light decode against the teacher's frames (`eval/psnr_vs_full_db`) and the real ones
(`eval/psnr_db`) on whole eval videos; with sampler latents also against the teacher on the file's last
`sampler_eval_streams` whole streams (`eval/psnr_vs_full_sampler_db`).
"""

from __future__ import annotations

import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.data import sources
from fc_jax.models import light_decoder, vae
from fc_jax.training.optim import make_optimizer
from fc_jax.training.sharding import activation_sharding, global_batch, replicated
from fc_jax.training.stage import SingleNetworkStage, StageData
from fc_jax.training.stages.vae import open_triplet_data, rare_colour_weights, to_pixels
from fc_jax.training.state import fresh_state

LATENT_AXES = (None, "batch", "frames", None, None, "channels")


def pixel_loss(pred, target, mse_weight: float, weights=None) -> jax.Array:
    """Per clip [B]: mean |pred − target| + mse_weight · mean (pred − target)² over each clip's values; with
    `weights` [B, F, H, W] the weighted mean over each clip's pixels."""
    error = pred - target
    per_value = jnp.abs(error) + mse_weight * jnp.square(error)
    axes = tuple(range(1, error.ndim))
    if weights is None:
        return jnp.mean(per_value, axes)
    weights = weights[..., None]
    return jnp.mean(weights * per_value, axes) / jnp.mean(weights, axes)


def teacher_colour_weights(teacher_frames, weight: float, share: float):
    """Per-pixel weights [B, F, H, W] (`stages.vae.rare_colour_weights`, no gradient) of the teacher's frames in
    [-1, 1]: 1 + `weight` where the pixel's colour is rare in its clip, else 1; None when `weight` is 0."""
    if not weight:
        return None
    u8 = jnp.clip(jnp.round((jax.lax.stop_gradient(teacher_frames) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
    return rare_colour_weights(u8, weight, share)


def distill_loss(params, batch, real_weight: float, mse_weight: float, rare_colour_weight: float = 0.0,
                 rare_colour_share: float = 0.05) -> jax.Array:
    """The loss of one micro-batch {latents [B, f, h, w, 48], teacher [B, F, H, W, 3] in [-1, 1], video uint8,
    real [B] (1 where the clip's latents came from its video, 0 for a sampler's)}; with `rare_colour_weight`
    both terms weigh the pixels whose colour is rare in the teacher's frames (`teacher_colour_weights`)."""
    pred = light_decoder.decode_raw(params, batch["latents"])
    weights = teacher_colour_weights(batch["teacher"], rare_colour_weight, rare_colour_share)
    real = batch["real"]
    real_term = jnp.sum(real * pixel_loss(pred, to_pixels(batch["video"]), mse_weight, weights)) / jnp.maximum(
        jnp.sum(real), 1.0)
    return jnp.mean(pixel_loss(pred, batch["teacher"], mse_weight, weights)) + real_weight * real_term


def teacher_targets(teacher, video_u8, latent_noise: float = 0.0, sampler=None,
                    from_sampler=None) -> tuple[jax.Array, jax.Array]:
    """Clips uint8 [B, 4k+1, H, W, 3] -> (normalised posterior-mean latents [B, k+1, H/16, W/16, 48], the VAE
    decoder's frames of them [B, 4k+1, H, W, 3], clipped to [-1, 1]). With `sampler` (latents of that shape)
    and `from_sampler` [B] (1 or 0), clip i's latents are sampler[i] where from_sampler[i] is 1. `latent_noise`
    > 0: the latents are then perturbed by σ·n, σ ~ U(0, latent_noise) per clip (the key drawn from the clips'
    pixels, so a resumed run sees the same draws), before they are decoded."""
    mu, _ = vae.posterior_moments(teacher, to_pixels(video_u8), one_pass=True)
    z = vae.normalize_latents(mu)
    if sampler is not None:
        z = jnp.where(from_sampler.reshape((-1,) + (1,) * (z.ndim - 1)) > 0, sampler.astype(z.dtype), z)
    if latent_noise > 0.0:
        key = jax.random.fold_in(jax.random.key(0), jnp.sum(video_u8, dtype=jnp.uint32))
        scale_key, noise_key = jax.random.split(key)
        sigma = latent_noise * jax.random.uniform(scale_key, (z.shape[0],) + (1,) * (z.ndim - 1), z.dtype)
        z = z + sigma * jax.random.normal(noise_key, z.shape, z.dtype)
    if sampler is not None or latent_noise > 0.0:
        mu = vae.denormalize_latents(z)
    frames = jnp.clip(vae.decode_raw(teacher, mu, one_pass=True), -1.0, 1.0)
    return z, frames


def sampler_mask(rows: int, share: float) -> np.ndarray:
    """[rows] float32: 1 for the clips a batch of `rows` takes from the sampler's latents at `share` (evenly
    spread: clip i where floor((i+1)·share) > floor(i·share))."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"light_decoder_train.sampler_share must be in [0, 1], got {share}")
    return np.array([int((i + 1) * share) > int(i * share) for i in range(rows)], np.float32)


def load_sampler_latents(path: str, latent_frames: int, latent_size: tuple[int, int]) -> np.ndarray:
    """The sampler latents of `path` (.npy, memory-mapped) [N, f, h, w, 48], checked to hold at least
    `latent_frames` frames of at least `latent_size` = (h, w)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"light_decoder_train.sampler_latents {path!r}: no such file (expected a .npy of "
                                "a sampler's clean latents [N, f, h, w, 48], e.g. the tiny-world recipe's "
                                "sampler_latents step)")
    latents = np.load(path, mmap_mode="r")
    if (latents.ndim != 5 or latents.shape[-1] != light_decoder.Z_DIM or latents.shape[1] < latent_frames
            or latents.shape[2] < latent_size[0] or latents.shape[3] < latent_size[1]):
        raise ValueError(f"light_decoder_train.sampler_latents {path}: expected [N, >= {latent_frames}, "
                         f">= {latent_size[0]}, >= {latent_size[1]}, {light_decoder.Z_DIM}]; found "
                         f"{tuple(latents.shape)}")
    return latents


def sampler_windows(latents: np.ndarray, video_u8: np.ndarray, mask: np.ndarray, pool: int) -> np.ndarray:
    """[rows, f, h, w, 48] float32 for host clips `video_u8` [rows, 4f-3, 16h, 16w, 3]: for each clip with
    mask 1, the first f latent frames of a random one of `latents`' first `pool` streams in a random h x w
    window (zeros elsewhere); the draws are seeded by the clips' first frames."""
    rows, frames = video_u8.shape[0], (video_u8.shape[1] - 1) // 4 + 1
    h, w = video_u8.shape[2] // 16, video_u8.shape[3] // 16
    out = np.zeros((rows, frames, h, w, latents.shape[-1]), np.float32)
    rng = np.random.default_rng([zlib.crc32(np.ascontiguousarray(video_u8[:, 0]).tobytes()), 1])
    for i in np.flatnonzero(mask):
        n = rng.integers(pool)
        y, x = rng.integers(latents.shape[2] - h + 1), rng.integers(latents.shape[3] - w + 1)
        out[i] = latents[n, :frames, y:y + h, x:x + w]
    return out


def psnr_db(pred, target) -> jax.Array:
    """PSNR (dB, peak 255) of frames in [-1, 1]."""
    mse = jnp.mean(jnp.square((pred - target) * 127.5))
    return 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-10))


class LightDecoderStage(SingleNetworkStage):
    name = "light_decoder"
    batch_axes = {"video": LATENT_AXES, "latents": LATENT_AXES, "teacher": LATENT_AXES, "real": (None, "batch")}

    def build_model(self, config):
        return light_decoder.LightDecoderArch.from_config(config)

    def tokens_per_sample(self, config) -> int:
        """Latent positions of one training clip."""
        frames = (int(config.light_decoder_train.clip_frames) - 1) // 4 + 1
        height, width = sources.clip_size(config, config.light_decoder_train)
        return frames * (height // 16) * (width // 16)

    def loss(self, model, config, params, batch, key) -> jax.Array:
        t = config.light_decoder_train
        return distill_loss(params, batch, float(t.real_weight), float(t.mse_weight),
                            float(t.get("rare_colour_weight", 0.0)), float(t.get("rare_colour_share", 0.05)))

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

    def sampler(self, setup):
        """(the sampler latents [N, f, h, w, 48] (memory-mapped), how many of the first streams training draws
        from), or None without `light_decoder_train.sampler_latents` / a zero `sampler_share`."""
        t = setup.config.light_decoder_train
        if not t.get("sampler_latents", "") or float(t.get("sampler_share", 0.0)) == 0.0:
            return None
        if "sampler" not in setup.resources:
            frames = (int(t.clip_frames) - 1) // 4 + 1
            height, width = sources.clip_size(setup.config, t)
            latents = load_sampler_latents(t.sampler_latents, frames, (height // 16, width // 16))
            held = int(t.get("sampler_eval_streams", 0))
            if latents.shape[0] <= held:
                raise ValueError(f"light_decoder_train.sampler_latents {t.sampler_latents}: {latents.shape[0]} "
                                 f"streams, expected more than sampler_eval_streams = {held}")
            setup.resources["sampler"] = (latents, latents.shape[0] - held)
        return setup.resources["sampler"]

    def open_data(self, setup, workdir: str) -> StageData:
        self.teacher(setup)  # a missing teacher fails before any data is read
        sampler_mask(1, float(setup.config.light_decoder_train.get("sampler_share", 0.0)))  # a bad share too
        self.sampler(setup)  # and missing or misshapen sampler latents
        c = setup.config
        train, skipped, eval_batches = sources.clip_batches(c, c.light_decoder_train, open_triplet_data(c),
                                                            setup.host_rows, jax.process_index(), jax.process_count())
        return StageData(iter(train), skipped, eval_batches)

    def _targets(self, setup, latent_noise: float):
        """The jitted teacher: (video, sampler latents, from_sampler) [accum, micro, ...] -> (latents, teacher
        frames), sharded as the batch."""
        name = f"targets@{latent_noise}"
        if name not in setup.resources:
            def fn(teacher, video, sampler, from_sampler):
                one = lambda args: teacher_targets(teacher, args[0], latent_noise, args[1], args[2])
                return jax.lax.map(one, (video, sampler, from_sampler))

            out = (setup.batch_shardings["latents"], setup.batch_shardings["teacher"])
            setup.resources[name] = jax.jit(fn, out_shardings=out)
        return setup.resources[name]

    def device_batch(self, setup, local: dict) -> dict:
        """Host pixel clips -> the global batch {video, latents, teacher, real} (the teacher runs on the
        devices): `sampler_share` of the clips take sampler latents, all perturbed by `latent_noise`."""
        t = setup.config.light_decoder_train
        mask = sampler_mask(local["video"].shape[0], float(t.get("sampler_share", 0.0)))
        sampler = self.sampler(setup)
        if sampler is None:
            mask[:] = 0.0
        return self._batch(setup, local, float(t.get("latent_noise", 0.0)), mask, sampler)

    def eval_batch(self, setup, local: dict) -> dict:
        """As `device_batch`, on the clean latents of every clip's own video."""
        return self._batch(setup, local, 0.0, np.zeros(local["video"].shape[0], np.float32), None)

    def _batch(self, setup, local: dict, latent_noise: float, mask: np.ndarray, sampler) -> dict:
        video = np.asarray(local["video"])
        frames, height, width = (video.shape[1] - 1) // 4 + 1, video.shape[2] // 16, video.shape[3] // 16
        windows = (np.zeros((video.shape[0], frames, height, width, light_decoder.Z_DIM), np.float32)
                   if sampler is None else sampler_windows(sampler[0], video, mask, sampler[1]))
        batch = super().device_batch(setup, {"video": video, "real": 1.0 - mask})
        # the sampler's windows and the mask travel as the latents and `real` do (same shapes, same shardings)
        lead = lambda x: x.reshape((setup.accum, x.shape[0] // setup.accum) + x.shape[1:])
        drawn = global_batch({"latents": lead(windows), "real": lead(mask)}, setup.batch_shardings)
        with activation_sharding(setup.mesh, setup.rules):
            latents, frames = self._targets(setup, latent_noise)(self.teacher(setup), batch["video"],
                                                                 drawn["latents"], drawn["real"])
        return {**batch, "latents": latents, "teacher": frames}

    def abstract_batch(self, setup) -> dict:
        c = setup.config
        frames = int(c.light_decoder_train.clip_frames)
        height, width = sources.clip_size(c, c.light_decoder_train)
        lead = (setup.accum, setup.micro)
        shapes = {"video": ((*lead, frames, height, width, 3), np.uint8),
                  "latents": ((*lead, (frames - 1) // 4 + 1, height // 16, width // 16, light_decoder.Z_DIM),
                              np.float32),
                  "teacher": ((*lead, frames, height, width, 3), np.float32), "real": (lead, np.float32)}
        return {k: jax.ShapeDtypeStruct(s, d, sharding=setup.batch_shardings[k]) for k, (s, d) in shapes.items()}

    def eval_hooks(self, setup, data: StageData):
        """`eval/loss`, and the PSNR against the teacher's frames and the real ones (EMA parameters where there
        are some) on the fixed evaluation videos; with sampler latents, against the teacher on the held-out
        sampler streams."""
        hooks = super().eval_hooks(setup, data)
        if data.eval_batches:
            hooks.append(self._video_psnr_hook(setup, data))
        sampler = self.sampler(setup)
        if sampler is not None and sampler[0].shape[0] > sampler[1]:
            hooks.append(self._sampler_psnr_hook(setup, sampler[0][sampler[1]:]))
        return hooks

    def _video_psnr_hook(self, setup, data: StageData):
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

        return psnr

    def _sampler_psnr_hook(self, setup, held: np.ndarray):
        """`eval/psnr_vs_full_sampler_db`: the light decode of each held-out whole stream [f, h, w, 48] against the
        teacher's (decoded once, here)."""
        on_mesh = lambda z: jax.device_put(np.asarray(z[None], np.float32), replicated(setup.mesh))
        full = jax.jit(lambda t, z: jnp.clip(vae.decode_raw(t, vae.denormalize_latents(z), one_pass=True), -1, 1))
        pairs = [(z, full(self.teacher(setup), z)) for z in map(on_mesh, held)]
        score = jax.jit(lambda p, z, ref: psnr_db(jnp.clip(light_decoder.decode_raw(p, z), -1.0, 1.0), ref))

        def psnr(step, state):
            params = state.params if state.ema_params is None else state.ema_params
            return {"eval/psnr_vs_full_sampler_db": float(np.mean([score(params, z, ref) for z, ref in pairs]))}

        return psnr


STAGE = LightDecoderStage()
