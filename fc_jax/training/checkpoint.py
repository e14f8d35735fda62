"""Orbax checkpoints of a whole run: the train state, the grain iterator state (per process) and the config.

An `ocp.CheckpointManager` under `WORKDIR/checkpoints`: async saves, keep-last-N (`keep_last`) and keep-every-K
(`keep_every`, 0 = none) policies. A save is written to a temporary folder and renamed (or, on object stores,
marked committed) only when complete, so a save cut short never shadows the last good checkpoint; such leftovers
are removed when the manager opens. Restoring takes an abstract state whose leaves carry the target shardings,
so a checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).

Resuming (`restore_latest`) tells two failures apart before and while reading a step:
- a mismatch (`CheckpointMismatch`): the step's metadata reads, but its arrays' names, shapes or dtypes are not
  this run's state (a different model width, optimizer, stage): nothing is touched and the error names the
  first differences;
- an unreadable step (`UnreadableCheckpoint`): its metadata cannot be read (emptied or garbled `_METADATA`), or
  reading its files fails (a truncated or missing array file, a garbled data-iterator file). The step is moved
  aside to `checkpoints/<step>.corrupt` (kept for inspection; orbax lists only numbered folders, so it is never
  taken for a step again), one line names it and why, and the next older step is tried.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import re
import sys
from typing import Callable, Iterator

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from fc_jax import distributed
from fc_jax.convert.common import tree_path
from fc_jax.training.state import TrainState

# Status codes TensorStore puts at the start of a failed read's message.
_READ_ERRORS = re.compile(r"^(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|FAILED_PRECONDITION|INVALID_ARGUMENT|UNKNOWN)\b")


@contextlib.contextmanager
def _held_stderr(held: io.StringIO) -> Iterator[None]:
    """Write what goes to stderr in the block into `held` (unraisable exceptions are dropped). A failed orbax
    read leaves its other reads running; they end in "Event loop is closed" tracebacks from TensorStore's
    threads, which would bury the one line that reports the damaged checkpoint."""
    stderr, hook = sys.stderr, sys.unraisablehook
    sys.stderr, sys.unraisablehook = held, lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()  # the abandoned reads' coroutines report now, into `held`
        sys.stderr, sys.unraisablehook = stderr, hook


class CheckpointError(Exception):
    """A run's checkpoint that cannot be resumed from; the message (one line) names it and what to do."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint reads, but holds a different state than this run's (model, optimizer or stage changed)."""


class UnreadableCheckpoint(CheckpointError):
    """The checkpoint's files are damaged (truncated, emptied, garbled or missing)."""


def _is_read_error(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) is a failed read of a file, not a bug or a resource limit."""
    while error is not None:
        if isinstance(error, (OSError, json.JSONDecodeError, EOFError)) or (
                isinstance(error, ValueError) and _READ_ERRORS.match(str(error))):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    """The first line of the innermost message of `error`'s chain (TensorStore's own, not orbax's wrapper)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


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

    def step_path(self, step: int) -> str:
        return f"{self.directory}/{step}"

    def _check_layout(self, step: int, abstract_state) -> None:
        """Raise UnreadableCheckpoint if `step`'s state metadata does not read, CheckpointMismatch if it names
        other arrays, shapes or dtypes than `abstract_state`."""
        where = f"{self.step_path(step)}/state/_METADATA"
        try:
            with ocp.PyTreeCheckpointer() as checkpointer:
                metadata = checkpointer.metadata(f"{self.step_path(step)}/state").item_metadata
        except Exception as e:  # noqa: BLE001 (any failure to read the metadata file means the same)
            raise UnreadableCheckpoint(f"{where} cannot be read ({type(e).__name__}: {_first_line(e)})") from e
        if metadata is None:
            raise UnreadableCheckpoint(f"{where} is empty or garbled")
        layout = lambda tree: {tree_path(path): (tuple(x.shape), str(x.dtype))
                               for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
        saved, wanted = layout(metadata.tree), layout(abstract_state)
        if saved == wanted:
            return
        differences = [f"{k}: {saved[k][1]}{list(saved[k][0])} saved, {wanted[k][1]}{list(wanted[k][0])} here"
                       for k in wanted if k in saved and saved[k] != wanted[k]]
        differences += [f"{k} only in this run" for k in wanted if k not in saved]
        differences += [f"{k} only in the checkpoint" for k in saved if k not in wanted]
        shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
        raise CheckpointMismatch(
            f"checkpoint {self.step_path(step)} was written for a different state than this run's (model, "
            f"optimizer or stage settings changed), not damaged: {shown}. Resume with the run's settings, or "
            f"start a new --workdir")

    def restore(self, step: int, abstract_state: TrainState, data_iterator=None) -> TrainState:
        """The state of `step`, laid out as `abstract_state` says; `data_iterator` (if given) is set to the saved
        position in place. Raises CheckpointMismatch or UnreadableCheckpoint (see the module docstring)."""
        self._check_layout(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            if not _is_read_error(e):
                raise
            raise UnreadableCheckpoint(f"reading {self.step_path(step)} failed: {_first_line(e)}") from e
        return restored["state"]

    def _set_aside(self, step: int) -> str:
        """Move the folder of `step` to `<step>.corrupt` (`.corrupt-2`, ... if taken) on the main process; the
        manager forgets the step. Returns the new path."""
        source = epath.Path(self.step_path(step))
        target, n = epath.Path(f"{source}.corrupt"), 1
        while target.exists():
            n += 1
            target = epath.Path(f"{source}.corrupt-{n}")
        if distributed.is_main_process():
            source.rename(target)
        distributed.sync(f"set aside checkpoint {step}")
        self.manager.reload()
        return str(target)

    def restore_latest(self, abstract_state: TrainState, data_iterator=None,
                       log: Callable[[str], None] = print) -> tuple[TrainState, int] | None:
        """(state, step) of the newest step that reads, or None when there is no step. An unreadable step is
        moved aside with one `log` line naming it, and the step before it is tried; a mismatch raises."""
        set_aside = []
        for step in sorted(self.all_steps(), reverse=True):
            held = io.StringIO()
            try:
                with _held_stderr(held):
                    state = self.restore(step, abstract_state, data_iterator)
            except UnreadableCheckpoint as e:
                moved = self._set_aside(step)
                set_aside.append(moved)
                log(f"checkpoint step {step} is unreadable: {e}; moved it to {moved} (kept, not deleted) and "
                    f"falling back to the previous checkpoint")
                continue
            except BaseException:
                sys.stderr.write(held.getvalue())
                raise
            if not set_aside:  # (after a failed read, what was written is the noise of its threads)
                sys.stderr.write(held.getvalue())
            return state, step
        if set_aside:
            raise CheckpointError(
                f"no checkpoint in {self.directory} reads (moved aside: {', '.join(set_aside)}); rerun to start "
                f"from step 0, or restore a good checkpoint into {self.directory}")
        return None

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
