"""Fixtures shared across test modules, and the suite's compile settings.

The suite is compile-bound (tiny programs, CPU): before jax is imported, it turns on XLA's fast code generation
(`--xla_backend_optimization_level=0`, no expensive LLVM passes: the same HLO programs, less optimised machine
code) and a persistent compilation cache for the session, shared with the subprocesses the
tests start (they inherit the environment), so a program compiled once is loaded, not compiled, elsewhere.
`FC_JAX_TEST_CACHE` names a cache folder to keep between runs (default: a fresh temporary one per session).
"""

import os
import tempfile

_FAST_XLA = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = " ".join(dict.fromkeys(os.environ.get("XLA_FLAGS", "").split() + list(_FAST_XLA)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Set once, in the first process that loads this file (pytest-xdist workers inherit it): one cache for all.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.setdefault("FC_JAX_TEST_CACHE", tempfile.mkdtemp(prefix="jax_cache_"))
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from fc_jax.config import load_config  # noqa: E402
from fc_jax.models import dit  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dit():
    """(config, model, params): the tiny config's WanDiT with random parameters, every leaf perturbed by
    N(0, 0.05²) noise so the zero-initialised head and biases are non-zero too. Built once per test session."""
    config = load_config("tiny")
    model = dit.build_model(config)
    params = dit.init_params(model, jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    perturb = jax.jit(lambda ls, ks: [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(ls, ks)])
    return config, model, jax.tree.unflatten(treedef, perturb(leaves, list(keys)))
