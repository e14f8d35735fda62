"""The VAE stage: a Wan2.2 VAE (`fc_jax.models.vae`, any width; the latent format is the real one: 48 channels,
16x spatial, 4x temporal) trained on pixel clips, as Wan's VAE is trained without its GAN and perceptual terms.

Per clip x [B, F, H, W, 3] (uint8 -> [-1, 1]): the encoder's posterior (mu, log σ²) over the raw latents, a sample
z = mu + σ·ε, the unclipped decode x̂ of z (encoder and decoder each run the clip in one pass: the streaming
values, faster to differentiate); loss = the w-weighted mean of |x̂ − x| + `vae_train.mse_weight` · (x̂ − x)² +
`vae_train.kl_weight` · mean KL(N(mu, σ²) ‖ N(0, 1)). The pixel weights w (`rare_colour_weights`) are 1, plus
`vae_train.rare_colour_weight` where the pixel's colour is rare in its clip (under `vae_train.rare_colour_share`
of it): frequency balancing without masks, meant to keep a small figure's colours from being drowned by the
background's (0, the default, is the plain mean; on the tiny world it did not raise the figure's PSNR, see
`configs/tinyworld_vae.py`). A fresh VAE's log-variance starts at
`vae_train.logvar_init` (`start_logvar`; None keeps the random init's ≈ 0, a σ ≈ 1 posterior noise that the weakly
weighted KL and the reconstruction shrink only slowly, while the decoder learns to blur over it). Evaluation: the
loss at a fixed key (`eval/loss`) and the PSNR of the clipped posterior-mean reconstruction on fixed eval videos
(`eval/psnr_db`).
Data: `fc_jax.data.sources.clip_batches` (random `vae_train.clip_frames`-frame clips of triplet videos, cut to
random `vae_train.crop` windows when it is set; evaluation on whole videos, every frame at full size: later
chunks drift when training clips are short, and only whole videos show it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.data import sources
from fc_jax.models import vae
from fc_jax.training.optim import make_optimizer
from fc_jax.training.sharding import activation_sharding, replicated
from fc_jax.training.stage import SingleNetworkStage, StageData
from fc_jax.training.state import fresh_state


def to_pixels(video_u8) -> jax.Array:
    """uint8 [..., 3] -> float32 in [-1, 1]."""
    return video_u8.astype(jnp.float32) / 127.5 - 1.0


COLOUR_LEVELS = 8  # levels per channel of the colour bins that `rare_colour_weights` counts (8³ = 512 bins)


def rare_colour_weights(video_u8, weight: float, share: float) -> jax.Array:
    """Per-pixel loss weights float32 [B, F, H, W] of clips uint8 [B, F, H, W, 3]: 1 + `weight` where the pixel's
    colour bin (each channel cut into `COLOUR_LEVELS` levels) holds under `share` of its clip's pixels, else 1."""
    if weight < 0 or not 0 < share <= 1:
        raise ValueError(f"rare_colour_weights: expected weight >= 0 and 0 < share <= 1, found weight {weight}, "
                         f"share {share}")
    levels = video_u8.astype(jnp.int32) // (256 // COLOUR_LEVELS)
    bins = (levels[..., 0] * COLOUR_LEVELS + levels[..., 1]) * COLOUR_LEVELS + levels[..., 2]

    def clip_share(clip_bins):
        counts = jnp.zeros(COLOUR_LEVELS**3, jnp.float32).at[clip_bins.ravel()].add(1.0)
        return counts[clip_bins] / clip_bins.size

    return 1.0 + weight * (jax.vmap(clip_share)(bins) < share).astype(jnp.float32)


def vae_loss(params, video_u8, key, kl_weight: float, mse_weight: float, rare_colour_weight: float = 0.0,
             rare_colour_share: float = 0.05) -> jax.Array:
    """The reconstruction + KL loss of one micro-batch of clips uint8 [B, 4k+1, H, W, 3]."""
    x = to_pixels(video_u8)
    mu, logvar = vae.posterior_moments(params, x, one_pass=True)
    logvar = jnp.clip(logvar, -30.0, 20.0)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    error = vae.decode_raw(params, z, one_pass=True) - x
    per_pixel = jnp.abs(error) + mse_weight * jnp.square(error)
    if rare_colour_weight:
        weights = rare_colour_weights(video_u8, rare_colour_weight, rare_colour_share)[..., None]
        reconstruction = jnp.mean(weights * per_pixel) / jnp.mean(weights)
    else:
        reconstruction = jnp.mean(per_pixel)
    kl = 0.5 * jnp.mean(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)
    return reconstruction + kl_weight * kl


def psnr_db(params, video_u8) -> jax.Array:
    """PSNR (dB, peak 255) of the clipped posterior-mean reconstruction of clips uint8 [B, F, H, W, 3]."""
    x = to_pixels(video_u8)
    mu, _ = vae.posterior_moments(params, x, one_pass=True)
    recon = jnp.clip(vae.decode_raw(params, mu, one_pass=True), -1.0, 1.0)
    mse = jnp.mean(jnp.square((recon - x) * 127.5))
    return 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-10))


def start_logvar(params, logvar_init: float) -> dict:
    """`params` with the encoder's log-variance output (the second half of `quant_conv`) made the constant
    `logvar_init`: its kernel columns zero, its biases `logvar_init`; mu's half untouched."""
    conv = params["quant_conv"]
    z_dim = conv["bias"].shape[-1] // 2
    kernel = conv["kernel"].at[..., z_dim:].set(0.0)
    bias = conv["bias"].at[z_dim:].set(logvar_init)
    return {**params, "quant_conv": {**conv, "kernel": kernel, "bias": bias}}


def open_triplet_data(config):
    """The `FashionTriplets` builder at `config.data.data_dir` (curation's output, or a tiny-world data set)."""
    from fc_jax.data import triplets

    if not config.data.data_dir:
        raise ValueError("config.data.data_dir is empty: point it at a FashionTriplets data set (curation's output, "
                         "`python -m fc_jax.tinyworld write`, or let `python -m fc_jax.tinyworld recipe` render one)")
    return triplets.open_builder("triplets", config.data.data_dir)


class VAE(SingleNetworkStage):
    name = "vae"
    batch_axes = {"video": (None, "batch", "frames", None, None, "channels")}

    def build_model(self, config):
        """The architecture of `config.vae` (the VAE's functions read it from the parameters)."""
        return vae.VAEArch.from_config(config)

    def tokens_per_sample(self, config) -> int:
        """Latent positions of one training clip."""
        frames = (int(config.vae_train.clip_frames) - 1) // 4 + 1
        height, width = sources.clip_size(config, config.vae_train)
        return frames * (height // 16) * (width // 16)

    def loss(self, model, config, params, batch, key) -> jax.Array:
        t = config.vae_train
        return vae_loss(params, batch["video"], key, float(t.kl_weight), float(t.mse_weight),
                        float(t.get("rare_colour_weight", 0.0)), float(t.get("rare_colour_share", 0.05)))

    def state_layout(self, setup):
        """The state, replicated on the mesh (a data-parallel VAE: its parameters carry no logical axes)."""
        tx, _ = make_optimizer(setup.config.optim)
        use_ema = self._use_ema(setup.config)
        shapes = jax.eval_shape(lambda p: fresh_state(p, tx, 0, use_ema), vae.abstract_params(setup.config))
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
            params = vae.init_params(config, jax.random.key(config.train.seed))
            logvar_init = config.vae_train.get("logvar_init")
            if logvar_init is not None:
                params = start_logvar(params, float(logvar_init))
        init = lambda p: fresh_state(p, tx, config.train.seed, self._use_ema(config))
        return jax.jit(init, out_shardings=setup.shardings)(params)

    def open_data(self, setup, workdir: str) -> StageData:
        builder = open_triplet_data(setup.config)
        train, skipped, eval_batches = sources.clip_batches(setup.config, setup.config.vae_train, builder,
                                                            setup.host_rows, jax.process_index(), jax.process_count())
        return StageData(iter(train), skipped, eval_batches)

    def abstract_batch(self, setup) -> dict:
        height, width = sources.clip_size(setup.config, setup.config.vae_train)
        shape = (setup.accum, setup.micro, int(setup.config.vae_train.clip_frames), height, width, 3)
        return {"video": jax.ShapeDtypeStruct(shape, np.uint8, sharding=setup.batch_shardings["video"])}

    def eval_hooks(self, setup, data: StageData):
        """`eval/loss` (the stage's) and `eval/psnr_db` of the EMA parameters where there are some, else the
        parameters, on the fixed evaluation videos."""
        hooks = super().eval_hooks(setup, data)
        if not data.eval_batches:
            return hooks
        jitted = jax.jit(lambda p, b: jax.lax.map(lambda micro: psnr_db(p, micro["video"]), b).mean(),
                         out_shardings=replicated(setup.mesh))
        batches = [self.eval_batch(setup, b) for b in data.eval_batches]

        def psnr(step, state):
            params = state.params if state.ema_params is None else state.ema_params
            with activation_sharding(setup.mesh, setup.rules):
                return {"eval/psnr_db": float(np.mean([float(jax.device_get(jitted(params, b))) for b in batches]))}

        return hooks + [psnr]


STAGE = VAE()
