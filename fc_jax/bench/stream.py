"""`python -m fc_jax.bench stream [--dim=512 --layers=4 --size=128 --speedup_size=256 --chunks=40 --skip_memory]`:
the streaming student on CPU at a small config, in one run —

- flatness: median per-chunk latency (DiT + VAE decode) of the last 10 / first 10 of >= 40 chunks timed with
  the window full (`dit_flatness`: the same for the DiT part alone);
- cached_speedup: per-chunk DiT time of recomputing the full block-causal forward over the window at every
  denoising step (no cache) / the cached chunk (4 denoise reads + 1 commit), same model, same full window, at
  `--speedup_size` (larger than the streaming size, so per-call overheads do not hide the work);
- switch_over_chunk: a garment switch (garment preprocessing + VAE encodes + cache rescheduling) / one chunk
  (DiT + VAE decode);
- compiles_after_warmup: XLA compilations during the timed chunks and switches;
- with a tiny-world student (`--weights`, default the shipped weights when they hold a student and a light
  decoder): its chunk time at 160x128 with the VAE decoder, with the light decoder and for the DiT alone, as
  frames per second (`stream_fps_vae`, `stream_fps_light`, `dit_only_fps`) and `light_over_dit_only_fps`;
and, from `python -m fc_jax.bench memory --mode=student` in a subprocess, the ahead-of-time compiled peak memory
of one 5B student chunk step (denoise read and commit) at 1280x704 with the authors' 23-frame window, bf16,
cache included, on abstract shapes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fc_jax import cli
from fc_jax.bench.common import CompileCounter, emit
from fc_jax.config import load_config
from fc_jax.models import dit, vae
from fc_jax.models.attention import streaming_layout
from fc_jax.sampling.streaming import StreamingSession


FLAGS = flags.FlagValues()
flags.DEFINE_integer("dim", 512, "model width (heads = dim / 128, ffn = 4 dim)", flag_values=FLAGS)
flags.DEFINE_integer("layers", 4, "transformer blocks", flag_values=FLAGS)
flags.DEFINE_integer("size", 128, "video height = width (pixels)", flag_values=FLAGS)
flags.DEFINE_integer("speedup_size", 256, "video size for cached_speedup (pixels)", flag_values=FLAGS)
flags.DEFINE_integer("chunks", 40, "timed chunks with the window full", flag_values=FLAGS)
flags.DEFINE_string("weights", None, "tiny-world weights folder with a student and a light decoder (default: the "
                    "shipped one when it has both)", flag_values=FLAGS)
flags.DEFINE_bool("skip_memory", False, "leave out the 5B chunk-step memory (its subprocess)", flag_values=FLAGS)


def _small_config(dim: int, layers: int, size: int):
    config = load_config("tiny")
    config.model.update(dict(dim=dim, ffn_dim=4 * dim, num_heads=dim // 128, num_layers=layers))
    config.video.update(dict(height=size, width=size))
    config.vae.update(dict(encoder_res_blocks=1, decoder_res_blocks=1))
    return config


def _timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return (time.perf_counter() - start) * 1e3


def _recompute_chunk_ms(session: StreamingSession, repeats: int) -> float:
    """Per-chunk time without a cache: every denoising step runs the model over [conditions, full history,
    noisy chunk] with the streaming block-causal layout (the chunk sees exactly what the cache would give)."""
    spec, model = session.spec, session.model
    chunks = spec.history_chunks + 1
    layout = streaming_layout(chunks, spec.chunk_frames, spec.tokens_per_frame)
    frames = spec.cond_frames + chunks * spec.chunk_frames
    latents = jnp.zeros((1, frames, session.latent_h, session.latent_w, model.cfg.in_channels))
    t = jnp.zeros((1, frames))
    steps = len(session.timesteps)

    @jax.jit
    def recompute(p, x, t):
        for _ in range(steps):  # each step: the whole window, no cache (inputs differ per step in real use)
            x = x.at[:, -spec.chunk_frames:].set(
                model.apply({"params": p}, x, t, session.context, np.arange(frames), layout)[:, -spec.chunk_frames:]
            )
        return x

    def chunk():
        return recompute(session.dit_params, latents, t)

    jax.block_until_ready(chunk())
    return statistics.median(_timed(chunk) for _ in range(repeats))


def _speedup(args, dit_params, vae_params, context, rng) -> tuple[float, float]:
    """(cached DiT ms per chunk, recompute ms per chunk) at `--speedup_size` with the window full."""
    config = _small_config(args.dim, args.layers, args.speedup_size)
    session = StreamingSession(config, dit_params, vae_params, context)
    session.start(rng.integers(0, 256, (400, 300, 3), dtype=np.uint8), rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    for _ in range(session.spec.history_chunks + 1):
        session.next_latents()
    cached = statistics.median(_timed(session.next_latents) for _ in range(10))
    return cached, _recompute_chunk_ms(session, repeats=5)


def _memory_5b() -> dict:
    """The 5B student-step memory figures, compiled in a fresh process (the memory bench sets XLA flags that must
    be in place before the backend starts)."""
    out = subprocess.run(
        [sys.executable, "-m", "fc_jax.bench", "memory", "--mode=student"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def tinyworld_folder(given: str | None) -> str | None:
    """The tiny-world weights to time: `given` (UserError without a student and a light decoder), else the
    shipped ones when they have both, else None."""
    import os

    from fc_jax.tinyworld import weights

    folder = given or weights.SHIPPED
    has = all(os.path.isfile(weights.part_path(p, folder)) for p in ("student", "light_decoder", "vae"))
    if given and not has:
        raise cli.UserError(f"--weights={given}: needs student, light_decoder and vae parts")
    return folder if has else None


def tinyworld_decoders(folder: str, chunks: int) -> dict:
    """Frames per second of the tiny-world student's stream with each decoder and of its DiT alone (median
    chunk after the window is full; 12 frames per later chunk)."""
    from fc_jax.text import EmbeddingCache
    from fc_jax.tinyworld import weights
    from fc_jax.tinyworld.demo import demo_case

    config = weights.configs(folder)["student"]
    part = lambda name: jax.tree.map(jnp.asarray, weights.load_part(name, folder))
    case = demo_case(45, None, config.video.height, config.video.width)
    context = jnp.asarray(EmbeddingCache(config.umt5.text_len, weights.text_encoder(config, folder))([case.caption])[0])
    dit_params, vae_params, light = part("student"), part("vae"), part("light_decoder")
    ms = {}
    for decoder in ("vae", "light"):
        session = StreamingSession(config, dit_params, vae_params, context, decoder=decoder,
                                   light_decoder_params=light if decoder == "light" else None)
        session.start(case.reference, case.garment)
        for _ in range(session.spec.history_chunks + 2):
            session.next_chunk()
        ms[decoder] = statistics.median(_timed(session.next_chunk) for _ in range(chunks))
        if decoder == "vae":
            ms["dit"] = statistics.median(_timed(session.next_latents) for _ in range(chunks))
    frames = 4 * config.student.chunk_frames
    fps = {k: frames / (v / 1e3) for k, v in ms.items()}
    return {"tinyworld_weights": folder, "tinyworld_size": [config.video.height, config.video.width],
            "chunk_ms_vae": round(ms["vae"], 2), "chunk_ms_light": round(ms["light"], 2),
            "chunk_ms_dit_only": round(ms["dit"], 2), "stream_fps_vae": round(fps["vae"], 2),
            "stream_fps_light": round(fps["light"], 2), "dit_only_fps": round(fps["dit"], 2),
            "light_over_dit_only_fps": round(fps["light"] / fps["dit"], 3)}


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after `python -m fc_jax.bench stream`."""
    prog = "python -m fc_jax.bench stream"
    cli.parse(FLAGS, prog, argv, description=__doc__)
    args = FLAGS
    with cli.user_errors(prog):
        folder = tinyworld_folder(args.weights)

    config = _small_config(args.dim, args.layers, args.size)
    model = dit.build_model(config)
    dit_params = dit.init_params(model, jax.random.key(0))
    vae_params = vae.init_params(config, jax.random.key(1))
    context = jax.random.normal(jax.random.key(2), (1, config.model.text_len, config.model.text_dim))
    rng = np.random.default_rng(0)
    garments = [rng.integers(0, 256, (300, 200, 3), dtype=np.uint8) for _ in range(3)]
    session = StreamingSession(config, dit_params, vae_params, context)
    session.start(rng.integers(0, 256, (400, 300, 3), dtype=np.uint8), garments[0])

    # Warm-up: fill the window (and compile the first and later chunk shapes, and a switch).
    for _ in range(session.spec.history_chunks + 1):
        session.next_chunk()
    session.switch_garment(garments[1], withdraw=False)
    session.next_chunk()

    with CompileCounter() as counter:
        chunk_ms = [_timed(session.next_chunk) for _ in range(args.chunks)]
        dit_ms = [_timed(session.next_latents) for _ in range(args.chunks)]
        switch_ms = [_timed(lambda g=g: session.switch_garment(g, withdraw=False)) for g in garments]
    flat = lambda ms: statistics.median(ms[-10:]) / statistics.median(ms[:10])
    chunk = statistics.median(chunk_ms)
    cached, recompute = _speedup(args, dit_params, vae_params, context, rng)
    result = {
        "benchmark": "streaming_student_cpu",
        "config": {"dim": args.dim, "layers": args.layers, "size": args.size, "tokens_per_frame":
                   session.spec.tokens_per_frame, "window_frames": config.student.window_frames},
        "chunk_ms_median": round(chunk, 2),
        "dit_chunk_ms_median": round(statistics.median(dit_ms), 2),
        "speedup_size": args.speedup_size,
        "cached_chunk_ms": round(cached, 2),
        "flatness": round(flat(chunk_ms), 3),
        "dit_flatness": round(flat(dit_ms), 3),
        "recompute_chunk_ms": round(recompute, 2),
        "cached_speedup": round(recompute / cached, 2),
        "switch_ms_median": round(statistics.median(switch_ms), 2),
        "switch_over_chunk": round(statistics.median(switch_ms) / chunk, 3),
        "compiles_after_warmup": counter.count,
    }
    if folder is not None:
        result.update(tinyworld_decoders(folder, min(args.chunks, 20)))
    if not args.skip_memory:
        result["memory_5b_1280x704_bf16"] = _memory_5b()
    emit(result)
