"""Networks: the Wan2.2 DiT, the Wan2.2 VAE, the umT5 text encoder."""
