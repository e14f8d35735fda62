"""Configs by name or by path: the ml_collections files of the installed `fc_jax.configs` package (the repo's
top-level `configs/` folder, mapped there by setup.cfg) or any config file.

A config is named `NAME[:VARIANT]`. NAME is a module of `fc_jax.configs` ("tiny", "sft_teacher"), or a path to a
.py file ("configs/sft_teacher.py", "/abs/my.py"); a path `.../configs/NAME.py` that does not exist from the
current directory falls back to the packaged NAME, so the documented `--config=configs/x.py` works from anywhere.
VARIANT goes to `get_config(VARIANT)`.

`load_config(spec)` returns the ConfigDict; `config_file(name)` is the `resolve` of the command lines'
`fc_jax.cli.DEFINE_config_file` flags: `--config=NAME[:VARIANT]` plus ml_collections' `--config.a.b=value`
overrides.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil

import ml_collections

from fc_jax import configs as _configs

CONFIG_DIR = os.path.dirname(os.path.abspath(_configs.__file__))


def packaged_configs() -> list[str]:
    """The names of the configs installed with fc_jax."""
    return sorted(m.name for m in pkgutil.iter_modules([CONFIG_DIR]))


def config_file(name: str) -> str:
    """The file of a config NAME (a packaged name or a path, see the module docstring); ValueError naming it and
    the packaged configs when there is none."""
    if os.path.isfile(name):
        return name
    stem = os.path.basename(name)
    stem = stem[:-3] if stem.endswith(".py") else stem
    packaged = os.path.dirname(name) in ("", "configs") or os.path.basename(os.path.dirname(name)) == "configs"
    if packaged and stem in packaged_configs():
        return os.path.join(CONFIG_DIR, stem + ".py")
    raise ValueError(f"config {name!r}: no such file, and not one of the packaged configs {packaged_configs()}")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(VARIANT)` of the config `NAME[:VARIANT]`."""
    name, sep, variant = spec.partition(":")
    path = config_file(name)
    spec_ = importlib.util.spec_from_file_location(f"fc_jax_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {name!r} ({module.__file__}) defines no get_config()")
    return module.get_config(variant) if sep else module.get_config()

