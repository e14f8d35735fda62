"""Loading a generate-ready checkpoint: the folder that `python -m fc_jax.generate --checkpoint=DIR` and
`python -m fc_jax.eval generate --checkpoint=DIR` read (`dit/` and `vae/` written by `fc_jax.convert`, and for the
prompts `text_cache.npz` and/or `umt5/`). Library code, so the CLIs and the evaluation share it."""

from __future__ import annotations

import os


def load_checkpoint(config, checkpoint: str, tokenizer: str | None = None):
    """(dit params, vae params, texts) from a checkpoint folder: `dit/` and `vae/` (orbax, `fc_jax.convert`) and
    for prompts `text_cache.npz` and/or `umt5/` (then `tokenizer`, the google/umt5-xxl folder, is required).
    `texts` is an `fc_jax.text.EmbeddingCache`: prompts -> (embeddings [B, text_len, text_dim], lengths [B]),
    encoding with umT5 the prompts the cache file lacks when `umt5/` is there."""
    from fc_jax.convert.common import load_params
    from fc_jax.convert.dit import load_dit_params
    from fc_jax.text import EmbeddingCache, TextEncoder

    for part in ("dit", "vae"):
        if not os.path.isdir(os.path.join(checkpoint, part)):
            raise FileNotFoundError(f"--checkpoint {checkpoint} has no {part}/ folder (write it with fc_jax.convert)")
    dit_params = load_dit_params(os.path.join(checkpoint, "dit"), config)
    vae_params = load_params(os.path.join(checkpoint, "vae"))
    cache_file = os.path.join(checkpoint, "text_cache.npz")
    encoder = None
    if os.path.isdir(os.path.join(checkpoint, "umt5")):
        if not tokenizer:
            raise ValueError("encoding a prompt with umt5/ needs --tokenizer (the google/umt5-xxl tokenizer folder)")
        encoder = TextEncoder.load(config, os.path.join(checkpoint, "umt5"), tokenizer)
    if os.path.isfile(cache_file):
        texts = EmbeddingCache.load(cache_file, encoder)
    elif encoder is not None:
        texts = EmbeddingCache(config.umt5.text_len, encoder)
    else:
        raise FileNotFoundError(f"--checkpoint {checkpoint} has neither text_cache.npz nor umt5/ for the prompt")
    return dit_params, vae_params, texts
