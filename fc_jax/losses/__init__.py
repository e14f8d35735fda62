"""Losses: distribution matching (`dmd`)."""

from fc_jax.losses.dmd import dmd_gradient, dmd_loss, gr_dmd_loss, reward_weights, weighted_dmd_loss

__all__ = ["dmd_gradient", "dmd_loss", "gr_dmd_loss", "reward_weights", "weighted_dmd_loss"]
