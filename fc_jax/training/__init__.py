"""Training: mesh and sharding rules (`sharding`), train state (`state`), optax optimizers (`optim`), the compiled
step (`step`), orbax checkpoints (`checkpoint`), metrics (`logger`), multi-process start-up (`distributed`), the
stage-1 SFT teacher (`sft`) and the loop (`loop`). Entry point: `python -m fc_jax.train`."""
