"""fc_jax: FashionChameleon in JAX — real-time, interactive human-garment video customization."""

__version__ = "0.1.0"
