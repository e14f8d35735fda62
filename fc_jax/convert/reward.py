"""CLIP ViT-L/14 (transformers) + LAION aesthetic head (.pth) -> `fc_jax.models.reward.AestheticReward` params.

- The CLIP source is a transformers folder (or a single safetensors file) of `CLIPModel` or
  `CLIPVisionModelWithProjection`: `vision_model.embeddings.*`, `vision_model.pre_layrnorm`,
  `vision_model.encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}`,
  `vision_model.post_layernorm`, `visual_projection`. The text tower of a full `CLIPModel` is skipped.
- The head is `sac+logos+ava1-l14-linearMSE.pth` (read with `torch.load(weights_only=True)`): `layers.{0,2,4,6,7}`.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from fc_jax.convert.common import CheckpointError, Rule, conv, convert, identity, linear, open_tensors
from fc_jax.models.reward import AESTHETIC_LAYER_INDICES, AestheticHead, CLIPVisionConfig, reward_target_shapes

_V = "vision_model."
_L = _V + "encoder.layers.{i}."
_SKIPPED = ("text_model.", "text_projection.", "logit_scale", _V + "embeddings.position_ids")


def clip_config_from_folder(path: str) -> CLIPVisionConfig:
    """The vision geometry from a transformers `config.json` beside the weights (CLIPModel or vision-only)."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.exists(cfg_path):
        return CLIPVisionConfig()
    with open(cfg_path) as f:
        cfg = json.load(f)
    vision = cfg.get("vision_config", cfg)
    act = vision.get("hidden_act", "quick_gelu")
    if act != "quick_gelu":
        raise CheckpointError(f"{cfg_path}: hidden_act {act!r} is not supported (CLIP ViT-L/14 uses quick_gelu)")
    return CLIPVisionConfig(
        image_size=vision.get("image_size", 224),
        patch_size=vision.get("patch_size", 14),
        hidden_size=vision["hidden_size"],
        intermediate_size=vision["intermediate_size"],
        num_layers=vision["num_hidden_layers"],
        num_heads=vision["num_attention_heads"],
        projection_dim=cfg.get("projection_dim", vision.get("projection_dim", 768)),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
    )


def clip_rules(config: CLIPVisionConfig) -> list[Rule]:
    n = config.num_layers
    rules = [
        Rule(("patch_embedding", "kernel"), _V + "embeddings.patch_embedding.weight", conv),
        Rule(("class_embedding",), _V + "embeddings.class_embedding"),
        Rule(("position_embedding",), _V + "embeddings.position_embedding.weight"),
        Rule(("visual_projection", "kernel"), "visual_projection.weight", linear),
    ]
    for ours, theirs in (("pre_layrnorm", "pre_layrnorm"), ("post_layernorm", "post_layernorm")):
        rules += [Rule((ours, "scale"), _V + theirs + ".weight"), Rule((ours, "bias"), _V + theirs + ".bias")]
    for ours, theirs in (("q_proj", "self_attn.q_proj"), ("k_proj", "self_attn.k_proj"), ("v_proj", "self_attn.v_proj"),
                         ("out_proj", "self_attn.out_proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
        rules += [Rule(("layers", ours, "kernel"), _L + theirs + ".weight", linear, layers=n),
                  Rule(("layers", ours, "bias"), _L + theirs + ".bias", identity, layers=n)]
    for norm in ("layer_norm1", "layer_norm2"):
        rules += [Rule(("layers", norm, "scale"), _L + norm + ".weight", identity, layers=n),
                  Rule(("layers", norm, "bias"), _L + norm + ".bias", identity, layers=n)]
    return rules


def head_rules() -> list[Rule]:
    return [Rule((f"layers_{i}", kind), f"layers.{i}.{src}", fn)
            for i in AESTHETIC_LAYER_INDICES for kind, src, fn in (("kernel", "weight", linear), ("bias", "bias", identity))]


def convert_clip_vision(src: str, config: CLIPVisionConfig | None = None) -> dict:
    """A transformers CLIP checkpoint -> the `CLIPVision` parameter tree (numpy)."""
    config = config or clip_config_from_folder(src)
    reader = open_tensors(src)
    if _V + "embeddings.class_embedding" not in reader:
        raise CheckpointError(f"{src} is not a transformers CLIP vision checkpoint: no "
                              f"{_V}embeddings.class_embedding among {reader.keys()[:6]}...")
    shapes = reward_target_shapes(config)["clip"]
    return convert(reader, clip_rules(config), shapes, ignore=lambda k: k.startswith(_SKIPPED))


def convert_aesthetic_head(src: str) -> dict:
    """The LAION head `.pth` (weights only) -> the `AestheticHead` parameter tree (numpy)."""
    embeds = jax.ShapeDtypeStruct((1, 768), jnp.float32)
    shapes = jax.eval_shape(lambda x: AestheticHead().init(jax.random.key(0), x), embeds)["params"]
    return convert(open_tensors(src), head_rules(), shapes)


def load_reward_params(clip_src: str, head_src: str) -> tuple[dict, CLIPVisionConfig]:
    """Both checkpoints -> ({"clip": ..., "head": ...}, the CLIP config read beside the weights)."""
    config = clip_config_from_folder(clip_src)
    params = {"clip": convert_clip_vision(clip_src, config), "head": convert_aesthetic_head(head_src)}
    if config.projection_dim != 768:
        raise CheckpointError(f"{clip_src}: projection_dim {config.projection_dim}, but the aesthetic head takes 768")
    return params, config
