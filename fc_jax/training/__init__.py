"""Training: the driver (`driver.train`), the seam that builds a stage's setup (`setup`), the stage protocol
(`stage`) and the stages (`stages/`: one module each), with their pieces — mesh and sharding rules (`sharding`),
train state (`state`), optax optimizers (`optim`), the generic step (`step`), orbax checkpoints (`checkpoint`),
metrics (`logger`), stage 3's math (`distill`, `rollout`). Entry point: `python -m fc_jax.train`."""
