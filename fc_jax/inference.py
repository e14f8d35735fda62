"""Loading a generate-ready checkpoint: the folder that `python -m fc_jax.generate --checkpoint=DIR` and
`python -m fc_jax.eval generate --checkpoint=DIR` read (`dit/` and `vae/` written by `fc_jax.convert` or
`fc_jax.export`, and for the prompts `text_cache.npz` and/or `umt5/`). Library code, so the CLIs and the
evaluation share it.

`check_checkpoint` checks such a folder against a config from metadata alone (no weights are read): its parts,
the shapes of `dit/` and `vae/` against the config's networks, the text cache's width and its prompts. Its
errors name the checkpoint, the config and what differs.
"""

from __future__ import annotations

import os
from typing import Sequence


def checkpoint_parts(checkpoint: str, tokenizer: str | None = None) -> dict[str, str | None]:
    """{"dit", "vae", "text_cache", "umt5": path or None} of a checkpoint folder; FileNotFoundError / ValueError
    naming what is missing (dit/, vae/, a text source, the tokenizer umt5/ needs)."""
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"--checkpoint={checkpoint}: no such folder (expected one holding dit/, vae/ and "
                                "text_cache.npz or umt5/, e.g. written by `python -m fc_jax.export ... --vae=...`)")
    parts = {name: os.path.join(checkpoint, name) for name in ("dit", "vae", "umt5")}
    parts["text_cache"] = os.path.join(checkpoint, "text_cache.npz")
    for name in ("dit", "vae"):
        if not os.path.isdir(parts[name]):
            raise FileNotFoundError(f"--checkpoint={checkpoint} has no {name}/ folder (write it with fc_jax.convert "
                                    "or fc_jax.export)")
    parts["umt5"] = parts["umt5"] if os.path.isdir(parts["umt5"]) else None
    parts["text_cache"] = parts["text_cache"] if os.path.isfile(parts["text_cache"]) else None
    if parts["umt5"] is None and parts["text_cache"] is None:
        raise FileNotFoundError(f"--checkpoint={checkpoint} has neither text_cache.npz nor umt5/ for the prompt")
    if parts["umt5"] and not tokenizer:
        raise ValueError(f"--checkpoint={checkpoint} encodes prompts with umt5/, which needs --tokenizer (the "
                         "google/umt5-xxl tokenizer folder)")
    return parts


def _compare(what: str, saved: dict, expected: dict, config_name: str) -> None:
    """ValueError naming `what`, the config and the first differing arrays when the shapes differ."""
    differences = [f"{k}: {list(saved[k])} in the checkpoint, {list(expected[k])} in the config"
                   for k in expected if k in saved and tuple(saved[k]) != tuple(expected[k])]
    differences += [f"{k} missing from the checkpoint" for k in expected if k not in saved]
    differences += [f"{k} not in the config's network" for k in saved if k not in expected]
    if differences:
        shown = "; ".join(differences[:2]) + (f"; and {len(differences) - 2} more" if len(differences) > 2 else "")
        raise ValueError(f"{what} was made for another model than config '{config_name}': {shown}. Pass the config "
                         "the checkpoint was made for (--config=...)")


def check_checkpoint(config, checkpoint: str, tokenizer: str | None = None, prompts: Sequence[str] = ()) -> None:
    """Check a generate-ready folder against `config` before any weight is read: its parts (`checkpoint_parts`),
    the shapes of dit/ (when an fc_jax parameter folder) and vae/ against the config's networks, the text cache's
    embedding width against the config's text_dim, and (without umt5/) that it holds `prompts`."""
    import jax

    from fc_jax.convert.common import is_orbax_checkpoint, saved_shapes, tree_path
    from fc_jax.models import dit, vae
    from fc_jax.text import EmbeddingCache

    parts = checkpoint_parts(checkpoint, tokenizer)
    shapes = lambda tree: {tree_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    name = config.get("name", "?")
    if is_orbax_checkpoint(parts["dit"]):
        _compare(f"--checkpoint={checkpoint}: dit/", saved_shapes(parts["dit"]),
                 shapes(dit.abstract_params(dit.build_model(config))), name)
    _compare(f"--checkpoint={checkpoint}: vae/", saved_shapes(parts["vae"]), shapes(vae.abstract_params(config)),
             name)
    if parts["text_cache"]:
        texts = EmbeddingCache.load(parts["text_cache"])
        width = texts.width()
        if width is not None and width != config.model.text_dim:
            raise ValueError(f"--checkpoint={checkpoint}: text_cache.npz holds {width}-wide embeddings; config "
                             f"'{name}' takes text_dim {config.model.text_dim}. Pass the config the checkpoint was "
                             "made for (--config=...)")
        missing = [p for p in prompts if p not in texts]
        if missing and parts["umt5"] is None:
            raise ValueError(f"--checkpoint={checkpoint}: text_cache.npz does not hold the prompt {missing[0]!r} "
                             f"and there is no umt5/ to encode it; it holds {len(texts)} prompt(s), e.g. "
                             f"{texts.prompts()[:3]}")


def load_checkpoint(config, checkpoint: str, tokenizer: str | None = None):
    """(dit params, vae params, texts) from a checkpoint folder (`checkpoint_parts`). `texts` is an
    `fc_jax.text.EmbeddingCache`: prompts -> (embeddings [B, text_len, text_dim], lengths [B]), encoding with umT5
    the prompts the cache file lacks when `umt5/` is there."""
    from fc_jax.convert.common import load_params
    from fc_jax.convert.dit import load_dit_params
    from fc_jax.text import EmbeddingCache, TextEncoder

    parts = checkpoint_parts(checkpoint, tokenizer)
    dit_params = load_dit_params(parts["dit"], config)
    vae_params = load_params(parts["vae"])
    encoder = TextEncoder.load(config, parts["umt5"], tokenizer) if parts["umt5"] else None
    if parts["text_cache"]:
        texts = EmbeddingCache.load(parts["text_cache"], encoder)
    else:
        texts = EmbeddingCache(config.umt5.text_len, encoder)
    return dit_params, vae_params, texts
