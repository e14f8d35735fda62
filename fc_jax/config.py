"""Loading ml_collections config files by path (the `--config=configs/x.py` convention)."""

from __future__ import annotations

import os
import runpy

import ml_collections

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(path_or_name: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file, given its path or a bare name under the repo's `configs/` ("tiny")."""
    path = path_or_name
    if not os.path.exists(path):
        candidate = os.path.join(CONFIG_DIR, path_or_name if path_or_name.endswith(".py") else path_or_name + ".py")
        if not os.path.exists(candidate):
            raise FileNotFoundError(f"config not found: {path_or_name} (looked for it as a path and in {CONFIG_DIR})")
        path = candidate
    namespace = runpy.run_path(path)
    if "get_config" not in namespace:
        raise ValueError(f"{path} defines no get_config()")
    return namespace["get_config"]()
