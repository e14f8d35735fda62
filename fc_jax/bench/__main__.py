"""`python -m fc_jax.bench {distill,dit,memory,stream,train,vae} [options]` — prints one JSON object with the figures."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "distill": "tiny stage-2 / stage-3 iteration times on CPU; --memory: 5B stage-3 per-device peaks (fake devices)",
    "dit": "our WanDiT forward vs diffusers' at a mid-sized fp32 config on CPU (speedup = diffusers_ms / ours_ms)",
    "memory": "parameter count and ahead-of-time compiled peak memory of the in-context forward (--config=...)",
    "stream": "streaming student: flatness, cached vs recompute speed-up, switch cost, compiles; 5B chunk memory",
    "train": "stage-1 train step: tiny step time / tokens/s on CPU; AOT per-device peak memory of the 5B step (fake devices)",
    "vae": "VAE encode / streaming-decode ms per frame (small config) and 1280x704 chunk-decode peak memory",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        lines = "\n".join(f"  {k:8s} {v}" for k, v in BENCHMARKS.items())
        raise SystemExit(f"usage: python -m fc_jax.bench NAME [options]\n{lines}")
    importlib.import_module(f"fc_jax.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
