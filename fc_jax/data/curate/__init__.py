"""Data curation (REFERENCE §8): raw videos -> training triplets in four resumable stages, tracked in a SQLite
manifest. `run.Curation` drives it; `python -m fc_jax.data.curate --config=configs/curate.py` runs it.

The output data set grows with the input: each run writes the triplets that are new since the last one (raw
videos added to `input_glob`, items whose server errors were retried) as a new part `<work_dir>/dataset/part-NNNNN`,
and every clip ends in exactly one part, even across killed runs (`write.py`). `fc_jax.data.triplets.open_builder`
(hence `python -m fc_jax.data.preencode --src=<work_dir>/dataset`) reads all parts as one data set."""
