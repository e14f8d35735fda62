"""umT5-XXL encoder checkpoints -> `fc_jax.models.umt5.UMT5Encoder` parameters.

Two layouts are recognised from their key names:
- official Wan2.2 (`models_t5_umt5-xxl-enc-bf16.pth`, the module tree of `wan/modules/t5.py` `T5Encoder`):
  `token_embedding`, `blocks.N.{norm1, attn.{q,k,v,o}, norm2, ffn.{gate.0, fc1, fc2}, pos_embedding.embedding}`,
  `norm`;
- transformers `UMT5EncoderModel` (a safetensors file or folder): `shared` and/or its tied copy
  `encoder.embed_tokens`, `encoder.block.N.layer.{0,1}...`, `encoder.final_layer_norm`. A full
  `UMT5ForConditionalGeneration`/`UMT5Model` checkpoint also loads: its decoder and LM head are skipped, with a
  log line saying how many tensors that was.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from fc_jax.convert.common import CheckpointError, Rule, convert, identity, linear, open_tensors
from fc_jax.models.umt5 import UMT5Encoder

log = logging.getLogger(__name__)

# Per-layer source names, by layout, for each of our block parameters ({i} = layer index).
_LAYER_KEYS = {
    "official": {
        "attn_norm": "blocks.{i}.norm1.weight",
        "q": "blocks.{i}.attn.q.weight",
        "k": "blocks.{i}.attn.k.weight",
        "v": "blocks.{i}.attn.v.weight",
        "o": "blocks.{i}.attn.o.weight",
        "rel_bias": "blocks.{i}.pos_embedding.embedding.weight",
        "ffn_norm": "blocks.{i}.norm2.weight",
        "gate": "blocks.{i}.ffn.gate.0.weight",
        "up": "blocks.{i}.ffn.fc1.weight",
        "down": "blocks.{i}.ffn.fc2.weight",
    },
    "transformers": {
        "attn_norm": "encoder.block.{i}.layer.0.layer_norm.weight",
        "q": "encoder.block.{i}.layer.0.SelfAttention.q.weight",
        "k": "encoder.block.{i}.layer.0.SelfAttention.k.weight",
        "v": "encoder.block.{i}.layer.0.SelfAttention.v.weight",
        "o": "encoder.block.{i}.layer.0.SelfAttention.o.weight",
        "rel_bias": "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight",
        "ffn_norm": "encoder.block.{i}.layer.1.layer_norm.weight",
        "gate": "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight",
        "up": "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight",
        "down": "encoder.block.{i}.layer.1.DenseReluDense.wo.weight",
    },
}
_FINAL_NORM = {"official": "norm.weight", "transformers": "encoder.final_layer_norm.weight"}
_TIED_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")
_DECODER_PREFIXES = ("decoder.", "lm_head.")


def detect_layout(keys: list[str], origin: str) -> str:
    """'official' or 'transformers', from the key names; CheckpointError if neither."""
    if "token_embedding.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "official"
    if any(k.startswith("encoder.block.") or k in _TIED_EMBEDDINGS for k in keys):
        return "transformers"
    raise CheckpointError(
        f"{origin} is not a umT5 encoder checkpoint: expected the official Wan2.2 keys (token_embedding.weight, "
        f"blocks.N...) or the transformers ones (shared.weight, encoder.block.N...); found {keys[:8]}"
        + (" ..." if len(keys) > 8 else "")
    )


def target_shapes(model: UMT5Encoder) -> dict:
    """The parameter tree of `model` as ShapeDtypeStructs (no allocation), without partitioning boxes."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    variables = jax.eval_shape(lambda i: model.init(jax.random.key(0), i), ids)
    return meta.unbox(variables)["params"]


def rules(layout: str, model: UMT5Encoder, embedding_key: str) -> list[Rule]:
    """The declarative key map of one layout into our tree."""
    h, d, e = model.num_heads, model.d_kv, model.d_model

    def heads_in(x: np.ndarray) -> np.ndarray:  # [H*D, E] -> [E, H, D]
        return linear(x).reshape(e, h, d)

    def heads_out(x: np.ndarray) -> np.ndarray:  # [E, H*D] -> [H, D, E]
        return linear(x).reshape(h, d, e)

    names = _LAYER_KEYS[layout]
    per_layer = [
        (("attn_norm", "scale"), "attn_norm", identity),
        (("attn", "q"), "q", heads_in),
        (("attn", "k"), "k", heads_in),
        (("attn", "v"), "v", heads_in),
        (("attn", "o"), "o", heads_out),
        (("attn", "rel_bias"), "rel_bias", identity),
        (("ffn_norm", "scale"), "ffn_norm", identity),
        (("ffn", "gate"), "gate", linear),
        (("ffn", "up"), "up", linear),
        (("ffn", "down"), "down", linear),
    ]
    out = [
        Rule(("embedding",), embedding_key),
        Rule(("final_norm", "scale"), _FINAL_NORM[layout]),
    ]
    out += [Rule(("layers",) + t, names[n], f, layers=model.num_layers) for t, n, f in per_layer]
    return out


def convert_checkpoint(src: str, config) -> dict:
    """Read an official or transformers umT5 encoder checkpoint at `src` into our parameter tree.

    `config` is a full fc_jax config (its `umt5` section is used) or the `umt5` section itself. Returns a nested
    dict of numpy arrays in the config's `param_dtype`, the tree `UMT5Encoder.from_config(...)` expects.
    """
    cfg = config.umt5 if "umt5" in config else config
    model = UMT5Encoder.from_config(cfg)
    reader = open_tensors(src)
    keys = reader.keys()
    layout = detect_layout(keys, reader.origin)
    if layout == "official":
        embedding_key, ignore = "token_embedding.weight", lambda k: False
    else:
        present = [k for k in _TIED_EMBEDDINGS if k in reader]
        embedding_key = present[0] if present else _TIED_EMBEDDINGS[0]
        skipped = [k for k in keys if k.startswith(_DECODER_PREFIXES)]
        if skipped:
            log.warning("%s: skipping %d decoder / LM-head tensors (only the encoder is used)", src, len(skipped))

        def ignore(k: str) -> bool:  # the tied twin of the embedding we read, and any decoder
            return (k in _TIED_EMBEDDINGS and k != embedding_key) or k.startswith(_DECODER_PREFIXES)

    return convert(
        reader,
        rules(layout, model, embedding_key),
        target_shapes(model),
        dtype=jnp.dtype(cfg.param_dtype),
        ignore=ignore,
        progress=len(keys) > 100,
    )
