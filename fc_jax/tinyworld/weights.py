"""The tiny world's trained weights, shipped as package data (`fc_jax/tinyworld/weights/`), and their reading.

Layout of a weights folder (the shipped one, or one written by `python -m fc_jax.tinyworld ship` from a recipe's
workdir):
- `vae.safetensors`, `base.safetensors`, `umt5.safetensors`, and once trained `light_decoder.safetensors`,
  `teacher.safetensors` (stage 1) and `student.safetensors` (stage 3, the generator's EMA): parameter trees, one tensor per leaf named by its
  path joined with "/" (e.g. `encoder/conv_in/kernel`), in the dtype they were written in (read back as fp32);
- `tokenizer.json`: the word-level tokenizer (`fc_jax.tinyworld.text`);
- `card.json` + `MODEL_CARD.md` + `curves/*.png`: recipe, steps, wall times and measured metrics.
A missing part is a FileNotFoundError naming the file and how to make it.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
PARTS = ("vae", "base", "umt5", "light_decoder", "teacher", "student")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested dict of arrays."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    """Inverse of `flatten`."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_tree(params: Mapping, path: str, dtype=None) -> None:
    """Write a parameter tree as one safetensors file (leaves cast to `dtype` when given), atomically."""
    from safetensors.numpy import save_file

    flat = {k: (v.astype(dtype) if dtype is not None else v) for k, v in flatten(params).items()}
    save_file(flat, path + ".tmp")
    os.chmod(path + ".tmp", 0o644)  # package data: readable by every user
    os.replace(path + ".tmp", path)


def load_tree(path: str) -> dict:
    """A parameter tree written by `save_tree`, as float32 numpy arrays."""
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tiny-world weights at {path}: train them with `python -m fc_jax.tinyworld "
                                f"recipe` and write them with `python -m fc_jax.tinyworld ship`")
    return unflatten({k: v.astype(np.float32) for k, v in load_file(path).items()})


def part_path(name: str, folder: str | None = None) -> str:
    """The file of part `name` (vae | base | umt5 | light_decoder | teacher | student | tokenizer) in `folder` (default: the shipped weights)."""
    folder = folder or SHIPPED
    if name == "tokenizer":
        return os.path.join(folder, "tokenizer.json")
    if name not in PARTS:
        raise ValueError(f"unknown tiny-world part {name!r}; expected one of {[*PARTS, 'tokenizer']}")
    return os.path.join(folder, f"{name}.safetensors")


def load_part(name: str, folder: str | None = None) -> dict:
    """The parameters of part `name` (vae | base | umt5 | light_decoder | teacher | student) from `folder` (default: the shipped weights)."""
    return load_tree(part_path(name, folder))


def card(folder: str | None = None) -> dict:
    """The weights' `card.json` (recipe, configs, metrics); {} where there is none."""
    path = os.path.join(folder or SHIPPED, "card.json")
    return json.load(open(path)) if os.path.isfile(path) else {}


def configs(folder: str | None = None) -> dict:
    """{part: config} for the trained parts (vae, base, and light_decoder, teacher, student where shipped): the
    packaged configs they were trained with (card.json's; the recipe's own vae and base configs for a folder
    without a card)."""
    from fc_jax.config import load_config

    names = card(folder).get("configs", {"vae": "tinyworld_vae", "base": "tinyworld_base"})
    return {stage: load_config(name) for stage, name in names.items()}


def text_encoder(config, folder: str | None = None, batch_size: int = 1):
    """The tiny world's `fc_jax.text.TextEncoder` (its tokenizer and frozen umT5) for `config.umt5`."""
    from fc_jax.text import TextEncoder, load_tokenizer

    tokenizer = load_tokenizer(part_path("tokenizer", folder), config.umt5.text_len)
    return TextEncoder(config.umt5, load_part("umt5", folder), tokenizer, batch_size)


def folder_size(folder: str) -> int:
    """Bytes of every file under `folder`."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)
