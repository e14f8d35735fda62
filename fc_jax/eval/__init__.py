"""HGC-Bench evaluation (REFERENCE §5, §7): the benchmark loader, the paper's eight metrics, the VLM judge and the
report. Entry point: `python -m fc_jax.eval score --bench=DIR --videos=DIR --out=DIR`."""
