"""`python -m fc_jax.bench decoder [--weights=DIR | --vae=DIR --light_decoder=DIR] [--samples=8 --repeats=3]`: the
light streaming decoder beside the VAE's decoder, in one process.

Prints one JSON object:
- `light_ms_per_frame`, `full_ms_per_frame`: steady-state streaming decode of 3-latent chunks (12 frames) at the
  tiny world's 160x128 on this machine (median after the first chunk and a warm-up), with the `--vae` and
  `--light_decoder` parameters, or the `vae` and `light_decoder` parts of the tiny-world weights folder
  `--weights` (random ones of `--small_vae_config` / `--small_light_config` without either);
- `light_gflop_per_frame_1280x704`, `full_gflop_per_frame_1280x704` and `flops_ratio_1280x704` (light / full):
  XLA's cost analysis of one later 3-latent chunk (12 frames) at 1280x704 (latent 80x44), the full decoder of
  `--config` (the 5B's VAE) and the light one of `--light_config`, on abstract shapes;
- `light_chunk_peak_bytes_1280x704`, `full_chunk_peak_bytes_1280x704`: their ahead-of-time compiled peak memory
  (arguments + outputs + temporaries - donated aliases) for this machine's backend;
- with `--weights`, or `--vae` and `--light_decoder` (trained, e.g. the tiny world's): `psnr_vs_full_db` (the light decode of the
  VAE's posterior-mean latents against the VAE's decode of them) and `psnr_vs_real_db` / `full_psnr_vs_real_db`
  (each against the rendered frames), over `--samples` held-out tiny-world videos;
- with `--weights` holding a student: `stream_metrics_vae` / `stream_metrics_light`, the tiny-world metrics
  (`fc_jax.tinyworld.metrics.evaluate`, means over `--stream_samples` held-out 45-frame streams with a switch
  at frame 21) of the student's stream decoded by each, `stream_metrics_max_rel_diff` (the largest
  |light - vae| / |vae| over those metrics; the goal: <= 0.02) with the metric it is on, and
  `stream_metrics_max_abs_diff` (the largest |light - vae|; every metric is a score in [0, 1], and a relative
  gap on one near 0, e.g. an lgc of 0.0002 against 0, says little) with its metric. A switch re-encodes the last
  frame the stream's own decoder made, so the two streams part after it; `stream_metrics_light_same_latents` and
  the `..._same_latents` gaps are the light decoder's on the VAE stream's latents: the decoder's share alone.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import compiled_memory, emit, median_ms
from fc_jax.config import config_file
from fc_jax.models import light_decoder, vae

FLAGS = flags.FlagValues()
flags.DEFINE_string("weights", None, "a tiny-world weights folder (fc_jax.tinyworld.weights; e.g. the shipped "
                    "one, fc_jax/tinyworld/weights) with vae and light_decoder parts", flag_values=FLAGS)
flags.DEFINE_string("vae", None, "VAE parameter folder (e.g. a tiny-world recipe's vae_params)", flag_values=FLAGS)
flags.DEFINE_string("light_decoder", None, "light decoder parameter folder (python -m fc_jax.export of a "
                    "light_decoder run)", flag_values=FLAGS)
cli.DEFINE_config_file("config", "configs/wan22_ti2v_5b.py", "config of the full decoder's 1280x704 figures", FLAGS,
                       resolve=config_file)
cli.DEFINE_config_file("light_config", "configs/wan22_light_decoder.py", "config of the light decoder's 1280x704 "
                       "figures", FLAGS, resolve=config_file)
cli.DEFINE_config_file("small_vae_config", "configs/tinyworld_vae.py", "VAE timed without --vae (and the timed "
                       "geometry)", FLAGS, resolve=config_file)
cli.DEFINE_config_file("small_light_config", "configs/tinyworld_light_decoder.py", "light decoder timed without "
                       "--light_decoder", FLAGS, resolve=config_file)
flags.DEFINE_integer("samples", 8, "held-out tiny-world videos for the PSNRs", flag_values=FLAGS)
flags.DEFINE_integer("stream_samples", 16, "held-out streams for the metrics with each decoder", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 3, "timed chunks (median)", flag_values=FLAGS)

CHUNK = 3  # latent frames per streamed chunk (12 video frames), as the student's


def _load(path: str):
    from fc_jax.convert.common import load_params

    if not os.path.isdir(path):
        raise cli.UserError(f"{path}: no such parameter folder (expected one written by python -m fc_jax.export "
                            "or the tiny-world recipe)")
    return jax.tree.map(jnp.asarray, load_params(os.path.abspath(path)))


def _load_part(part: str, folder: str):
    from fc_jax.tinyworld.weights import load_part

    try:
        return jax.tree.map(jnp.asarray, load_part(part, folder))
    except FileNotFoundError as e:
        raise cli.UserError(str(e)) from None


def stream_ms_per_frame(decode_chunk, params, state, latents, repeats: int) -> float:
    """Milliseconds per frame of a steady-state chunk of `latents` [1, CHUNK, h, w, 48] (after the first chunk)."""
    box = {"state": decode_chunk(params, state, latents[:, :1])[1]}

    def step():
        frames, box["state"] = decode_chunk(params, box["state"], latents)
        return frames

    return median_ms(step, repeats=repeats) / (4 * latents.shape[1])


def speed(vae_params, light_params, height: int, width: int, repeats: int) -> dict:
    h, w = height // 16, width // 16
    latents = jax.random.normal(jax.random.key(0), (1, CHUNK, h, w, light_decoder.Z_DIM))
    full = stream_ms_per_frame(vae.decode_chunk, vae_params,
                               vae.init_decode_cache(vae.VAEArch.from_params(vae_params), 1, h, w), latents, repeats)
    light = stream_ms_per_frame(light_decoder.decode_chunk, light_params,
                                light_decoder.init_state(light_params, 1, h, w), latents, repeats)
    return {"light_ms_per_frame": round(light, 3), "full_ms_per_frame": round(full, 3),
            "timed_size": [height, width]}


def big_figures(config, light_config, height: int = 704, width: int = 1280) -> dict:
    """FLOPs per frame and compiled peak memory of one later 3-latent chunk at `height` x `width` (abstract)."""
    h, w = height // 16, width // 16
    latents = jax.ShapeDtypeStruct((1, CHUNK, h, w, light_decoder.Z_DIM), jnp.float32)
    full_params = vae.abstract_params(config)
    full_cache = jax.eval_shape(lambda: vae.init_decode_cache(config, 1, h, w)).replace(started=True)
    light_params = jax.eval_shape(lambda: light_decoder.init_params(light_config, jax.random.key(0)))
    light_state = jax.eval_shape(lambda: light_decoder.init_state(
        light_decoder.init_params(light_config, jax.random.key(0)), 1, h, w)).replace(started=True)
    frames = 4 * CHUNK
    flops = {}
    for name, fn, params, state in (("full", vae._decode_chunk, full_params, full_cache),
                                    ("light", light_decoder._decode_chunk, light_params, light_state)):
        cost = jax.jit(fn).lower(params, state, latents).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops[name] = float(cost["flops"]) / frames
    size = f"{width}x{height}"
    return {
        f"light_gflop_per_frame_{size}": round(flops["light"] / 1e9, 3),
        f"full_gflop_per_frame_{size}": round(flops["full"] / 1e9, 3),
        f"flops_ratio_{size}": flops["light"] / flops["full"],
        f"light_chunk_peak_bytes_{size}": compiled_memory(light_decoder._decode_chunk, light_params, light_state,
                                                          latents, donate_argnums=1)["peak_bytes"],
        f"full_chunk_peak_bytes_{size}": compiled_memory(vae._decode_chunk, full_params, full_cache, latents,
                                                         donate_argnums=1)["peak_bytes"],
        "light_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(light_params))),
        "compiled_for": jax.default_backend(),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean(np.square(a.astype(np.float64) - b.astype(np.float64))))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def quality(vae_params, light_params, samples: int, height: int, width: int, frames: int) -> dict:
    """PSNRs of the light and the full decoder on held-out tiny-world videos (posterior-mean latents)."""
    from fc_jax.images import to_uint8
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import split_specs

    vs_full, vs_real, full_vs_real = [], [], []
    for spec in split_specs("heldout", samples, height=height, width=width, num_frames=frames):
        video = render_sample(spec).video
        z = vae.encode_video(vae_params, jnp.asarray(video[None], jnp.float32) / 127.5 - 1.0)
        full = to_uint8(vae.decode(vae_params, z)[0])
        light = to_uint8(light_decoder.decode(light_params, z)[0])
        vs_full.append(psnr(light, full))
        vs_real.append(psnr(light, video))
        full_vs_real.append(psnr(full, video))
    return {"psnr_vs_full_db": round(float(np.mean(vs_full)), 3), "psnr_vs_real_db": round(float(np.mean(vs_real)), 3),
            "full_psnr_vs_real_db": round(float(np.mean(full_vs_real)), 3), "psnr_samples": samples}


STREAM_METRICS = ("id/id", "motion/motion_alignment", "motion/amp_score", "motion/smoo_score", "vq/vq", "ntp/ntp",
                  "garment/hgc", "garment/lgc", "garment_after/hgc", "garment_after/lgc", "switch/new_share_chunk")


def _gaps(light: dict, full: dict) -> tuple[dict, dict]:
    """({metric: |light - full| / |full|}, {metric: |light - full|})."""
    diffs = {k: abs(light[k] - full[k]) for k in STREAM_METRICS}
    return {k: diffs[k] / max(abs(full[k]), 1e-6) for k in STREAM_METRICS}, diffs


def stream_metrics(folder: str, samples: int) -> dict:
    """The tiny-world metrics of the student's streams decoded by the VAE and by the light decoder (same seed
    and inputs; a switch re-encodes the last frame the session's decoder made, so the streams part there), their
    largest relative and absolute differences, and the light decoder's metrics on the VAE stream's own latents
    (the decoder's share of the gap alone)."""
    from fc_jax.images import to_uint8
    from fc_jax.sampling.streaming import StreamingSession
    from fc_jax.text import EmbeddingCache
    from fc_jax.tinyworld import weights
    from fc_jax.tinyworld.metrics import evaluate
    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import full_caption, split_specs, with_switch

    config = weights.configs(folder)["student"]
    v = config.video
    texts = EmbeddingCache(config.umt5.text_len, weights.text_encoder(config, folder))
    student, vae_params, light = (_load_part(p, folder) for p in ("student", "vae", "light_decoder"))
    specs = [with_switch(s, 21) for s in split_specs("heldout", samples, height=v.height, width=v.width,
                                                     num_frames=45)]
    rows = {"vae": [], "light": [], "light_same_latents": []}
    for decoder in ("vae", "light"):
        session = StreamingSession(config, student, vae_params, texts([""])[0], decoder=decoder,
                                   light_decoder_params=light if decoder == "light" else None)
        for spec in specs:
            truth = render_sample(spec)
            session.start(truth.reference, truth.garment, texts([full_caption(spec)])[0])
            chunks = list(session.stream(45, {21: truth.switch_garment}, progress=False, with_latents=True))
            rows[decoder].append(evaluate(np.concatenate([f for f, _ in chunks]), spec, ground_truth=truth))
            if decoder == "vae":
                same = light_decoder.decode(light, jnp.concatenate([z for _, z in chunks], axis=1))
                rows["light_same_latents"].append(evaluate(np.asarray(to_uint8(same[0])), spec, ground_truth=truth))
    means = {name: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in STREAM_METRICS}
             for name, rs in rows.items()}
    out = {"stream_metrics_vae": means["vae"], "stream_metrics_light": means["light"],
           "stream_metrics_light_same_latents": means["light_same_latents"], "stream_samples": samples}
    for suffix, name in (("", "light"), ("_same_latents", "light_same_latents")):
        gaps, diffs = _gaps(means[name], means["vae"])
        worst, worst_abs = max(gaps, key=gaps.get), max(diffs, key=diffs.get)
        out.update({f"stream_metrics_max_rel_diff{suffix}": round(gaps[worst], 4),
                    f"stream_metrics_max_rel_diff{suffix}_on": worst,
                    f"stream_metrics_max_abs_diff{suffix}": round(diffs[worst_abs], 4),
                    f"stream_metrics_max_abs_diff{suffix}_on": worst_abs})
    return out


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after `python -m fc_jax.bench decoder` (default: sys.argv[1:])."""
    prog = "python -m fc_jax.bench decoder"
    cli.parse(FLAGS, prog, argv, description=__doc__.split("\n\n")[0])
    with cli.user_errors(prog):
        emit(run(FLAGS))


def run(f) -> dict:
    """The figures of the parsed flags `f`."""
    small = f.small_vae_config
    height, width, frames = small.video.height, small.video.width, small.video.num_frames
    if f.weights and (f.vae or f.light_decoder):
        raise cli.UserError("--weights names both parts; give either it or --vae / --light_decoder")
    if f.weights:
        vae_params, light_params = (_load_part(part, f.weights) for part in ("vae", "light_decoder"))
    else:
        vae_params = _load(f.vae) if f.vae else vae.init_params(small, jax.random.key(1))
        light_params = (_load(f.light_decoder) if f.light_decoder
                        else light_decoder.init_params(f.small_light_config, jax.random.key(2)))
    trained = bool(f.weights) or (f.vae is not None and f.light_decoder is not None)
    result = {"trained": trained, **speed(vae_params, light_params, height, width, f.repeats)}
    result.update(big_figures(f.config, f.light_config))
    if trained:
        result.update(quality(vae_params, light_params, f.samples, height, width, frames))
    if f.weights and os.path.isfile(os.path.join(f.weights, "student.safetensors")) and f.stream_samples > 0:
        result.update(stream_metrics(f.weights, f.stream_samples))
    return result


if __name__ == "__main__":
    main()
