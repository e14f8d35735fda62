"""Helpers shared by the benchmarks: timing, AOT memory analysis, JSON output."""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import jax


def median_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` in milliseconds (outputs blocked on), after `warmup` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def compiled_memory(fn: Callable, *abstract_args, **jit_kwargs) -> dict:
    """Ahead-of-time compile `fn` on abstract shapes (nothing allocated) and report its memory analysis."""
    compiled = jax.jit(fn, **jit_kwargs).lower(*abstract_args).compile()
    mem = compiled.memory_analysis()
    args, out, temp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    alias = getattr(mem, "alias_size_in_bytes", 0)
    return {
        "argument_bytes": int(args),
        "output_bytes": int(out),
        "temp_bytes": int(temp),
        "peak_bytes": int(args + out + temp - alias),
    }


def emit(result: dict) -> None:
    print(json.dumps(result, indent=None, sort_keys=False))
