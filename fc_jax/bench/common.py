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


class CompileCounter:
    """Counts XLA compilations (jitted functions and eager ops alike) while active, via `jax.log_compiles`."""

    def __init__(self):
        import logging

        self.count = 0
        self.names: list[str] = []
        counter = self

        class _Handler(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if record.name.endswith("pxla") and message.startswith("Compiling "):
                    counter.count += 1
                    counter.names.append(message.split(" with ")[0][len("Compiling "):])

        self._handler = _Handler(level=logging.DEBUG)
        self._logger = logging.getLogger("jax._src.interpreters.pxla")
        self._context = None

    def __enter__(self):
        import logging

        self._old_level, self._old_propagate = self._logger.level, self._logger.propagate
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False  # count quietly
        self._logger.addHandler(self._handler)
        self._context = jax.log_compiles(True)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._old_level)
        self._logger.propagate = self._old_propagate
        return False
