"""The one seam that builds what a stage needs to train (as maxtext's `setup_train_loop`): the driver, the
benches and the tests all build through `setup()`, never by hand.

`setup(config)` gives the mesh, the logical rules, the stage and its network, the state layout, the batch
layout and its shardings; with a workdir also the checkpointer and the data. Nothing is initialised or compiled
here: `setup.stage.initial_state(setup)` and `setup.stage.compile(setup)` do that when asked.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from fc_jax import distributed
from fc_jax.training.checkpoint import Checkpointer
from fc_jax.training.sharding import Rules, batch_axis_size, logical_rules, logical_sharding, make_mesh
from fc_jax.training.stage import Stage, StageData
from fc_jax.training.stages import get_stage


@dataclasses.dataclass
class Setup:
    """config; stage (`config.stage`); mesh and rules; model: the stage's network; abstract: the state as
    ShapeDtypeStructs carrying their shardings, shardings: its NamedSharding tree; batch_shardings: per batch
    array; accum, micro, host_rows: accumulation steps, global micro-batch, rows each process reads per step;
    checkpointer and data: with a workdir, else None; resources: what the stage builds once per setup (e.g.
    stage 3's frozen real score)."""

    config: Any
    stage: Stage
    mesh: Mesh
    rules: Rules
    model: Any
    abstract: Any
    shardings: Any
    batch_shardings: dict
    accum: int
    micro: int
    host_rows: int
    checkpointer: Checkpointer | None = None
    data: StageData | None = None
    resources: dict = dataclasses.field(default_factory=dict)


def batch_layout(config, mesh: Mesh, rules: Rules) -> tuple[int, int, int]:
    """(accumulation steps, global micro-batch, per-process rows per optimizer step), checked against the mesh."""
    g, accum = int(config.train.global_batch), int(config.optim.grad_accum_steps)
    if accum < 1 or g % accum:
        raise ValueError(f"config.train.global_batch {g} is not divisible by config.optim.grad_accum_steps {accum}")
    micro = g // accum
    ways = batch_axis_size(mesh, rules)
    if micro % ways:
        raise ValueError(
            f"the micro-batch of {micro} samples (global_batch {g} / grad_accum_steps {accum}) does not split over "
            f"the {ways} batch shards of the mesh {dict(mesh.shape)}"
        )
    if g % jax.process_count():
        raise ValueError(f"config.train.global_batch {g} does not split over {jax.process_count()} processes")
    return accum, micro, g // jax.process_count()


def setup(config, workdir: str | None = None, *, devices: Sequence[jax.Device] | None = None,
          mesh_sizes: dict | None = None) -> Setup:
    """Everything stage `config.stage` needs, on `mesh_sizes` (default `config.mesh`) over `devices` (default
    all). With `workdir`: the checkpointer of WORKDIR/checkpoints and the stage's data (written first where it
    is synthetic)."""
    distributed.initialize(config.distributed.initialize)
    stage = get_stage(config.get("stage", "sft"))
    mesh = make_mesh(mesh_sizes or config.mesh, devices)
    rules = logical_rules(config)
    accum, micro, host_rows = batch_layout(config, mesh, rules)
    s = Setup(config=config, stage=stage, mesh=mesh, rules=rules, model=stage.build_model(config), abstract=None,
              shardings=None, batch_shardings={k: logical_sharding(v, mesh, rules) for k, v in stage.batch_axes.items()},
              accum=accum, micro=micro, host_rows=host_rows)
    s.abstract, s.shardings = stage.state_layout(s)
    if workdir is not None:
        c = config.checkpoint
        s.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep_last=c.keep_last,
                                      keep_every=c.keep_every, async_save=c.async_save)
        s.data = stage.open_data(s, workdir)
    return s
