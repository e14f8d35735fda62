"""The project's ml_collections configs, installed as `fc_jax.configs` (setup.cfg maps this folder there).

Each module has `get_config(variant="")`; pass one to a command as `--config=NAME[:VARIANT]` (e.g.
`--config=sft_teacher:tiny`) or as a path (`--config=configs/sft_teacher.py:tiny`)."""
