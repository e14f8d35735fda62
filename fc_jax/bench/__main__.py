"""`python -m fc_jax.bench {decoder,distill,dit,memory,serve,stream,tinyworld,train,vae} [flags]` — prints one JSON object with
the figures.

`python -m fc_jax.bench NAME --help` lists NAME's flags (absl style: `--name=value` or `--name value`, booleans
`--name` / `--noname`)."""

from __future__ import annotations

import importlib

from fc_jax import cli

BENCHMARKS = {
    "decoder": "light vs VAE decoder: ms per frame on CPU, 1280x704 FLOPs ratio and peak memory, PSNR (trained)",
    "distill": "tiny stage-2 / stage-3 iteration times on CPU; --memory: 5B stage-3 per-device peaks (fake devices)",
    "dit": "our WanDiT forward vs diffusers' at a mid-sized fp32 config on CPU (speedup = diffusers_ms / ours_ms)",
    "memory": "parameter count and ahead-of-time compiled peak memory of the in-context forward (--config=...)",
    "serve": "the live studio end to end over its WebSocket: received fps, switch latency (ms, chunks), first frame",
    "stream": "streaming student: flatness, cached vs recompute speed-up, switch cost, compiles; 5B chunk memory",
    "tinyworld": "the tiny world's trained VAE (held-out PSNR) and base model (motion accuracy), step times",
    "train": "stage-1 train step: tiny step time / tokens/s on CPU; AOT per-device peak memory of the 5B step (fake devices)",
    "vae": "VAE encode / streaming-decode ms per frame (small config) and 1280x704 chunk-decode peak memory",
}


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:]), the benchmark's NAME first; the rest
    goes to `fc_jax.bench.NAME.main`."""
    name, rest = cli.subcommand("python -m fc_jax.bench", BENCHMARKS, argv, description=__doc__.splitlines()[0])
    importlib.import_module(f"fc_jax.bench.{name}").main(rest)


def run() -> None:
    """Console-script entry point (fc-jax-bench)."""
    main()


if __name__ == "__main__":
    run()
