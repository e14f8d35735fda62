"""Data curation (REFERENCE §8): raw videos -> training triplets in four resumable stages, tracked in a SQLite
manifest. `run.Curation` drives it; `python -m fc_jax.data.curate --config=configs/curate.py` runs it."""
