"""Fixtures shared across test modules."""

import jax
import pytest

from fc_jax.config import load_config
from fc_jax.models import dit


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
