"""Benchmarks: `python -m fc_jax.bench <name> [flags]`, each printing one JSON object."""
