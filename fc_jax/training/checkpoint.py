"""Orbax checkpoints of a whole run: the train state, the grain iterator state (per process) and the config.

An `ocp.CheckpointManager` under `WORKDIR/checkpoints`: async saves, keep-last-N (`keep_last`) and keep-every-K
(`keep_every`, 0 = none) policies. A save is written to a temporary folder and renamed (or, on object stores,
marked committed) only when complete, so a save cut short never shadows the last good checkpoint; such leftovers
are removed when the manager opens. Restoring takes an abstract state whose leaves carry the target shardings,
so a checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).
"""

from __future__ import annotations

import json
import os

import grain
import orbax.checkpoint as ocp

from fc_jax.training.state import TrainState


class Checkpointer:
    """Saves and restores {state, data iterator, config} by step."""

    def __init__(self, directory: str, *, keep_last: int, keep_every: int = 0, async_save: bool = True):
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last if keep_last > 0 else None,
            keep_period=keep_every if keep_every > 0 else None,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, data_iterator, config) -> None:
        """Start saving (returns once the arrays are copied off the devices; the write goes on in the
        background). `data_iterator` may be None (nothing of the data to resume)."""
        items = {
            "state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: TrainState, data_iterator=None) -> TrainState:
        """The state of `step`, laid out as `abstract_state` says; `data_iterator` (if given) is set to the saved
        position in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match this run's state (model, optimizer or "
                f"data settings changed?): {e}"
            ) from e
        return restored["state"]

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
