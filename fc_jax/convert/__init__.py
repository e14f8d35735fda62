"""PyTorch checkpoints -> fc_jax parameter trees (declarative key maps; see `common`)."""

from fc_jax.convert.common import CheckpointError, Rule, convert, load_params, open_tensors, save_params

__all__ = ["CheckpointError", "Rule", "convert", "load_params", "open_tensors", "save_params"]
