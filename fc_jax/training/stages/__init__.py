"""The training stages, one module each, named as `config.stage`; each module's `STAGE` is its
`fc_jax.training.stage.Stage`. Adding a stage is adding a module here."""

from __future__ import annotations

import importlib
import os
import pkgutil

from fc_jax.training.stage import Stage


def available() -> list[str]:
    """The names of the stages (the modules of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)]) if not m.name.startswith("_"))


def get_stage(name: str) -> Stage:
    """The stage called `name`; ValueError naming the known ones otherwise."""
    if name not in available():
        raise ValueError(f"config.stage {name!r}: expected one of {available()}")
    stage = getattr(importlib.import_module(f"{__name__}.{name}"), "STAGE", None)
    if not isinstance(stage, Stage):
        raise TypeError(f"fc_jax.training.stages.{name} defines no STAGE (a fc_jax.training.stage.Stage)")
    return stage
