"""Data: TFDS ArrayRecord builders for pixel and latent triplets (`triplets`), grain pipelines (`pipeline`),
pre-encoding with the VAE and umT5 (`preencode`, `python -m fc_jax.data.preencode`), synthetic triplets
(`synthetic`)."""
