"""Export one network from a training checkpoint: `python -m fc_jax.export --workdir=DIR --dst=DIR [--step=N]
[--which=NAME]`.

Every stage checkpoints its whole state (parameters, optimizer moments, EMA, RNG) under `WORKDIR/checkpoints`;
the next stage (`config.train.init_from`, `config.distill.teacher_from`, `generator_from`) and inference
(`fc_jax.generate --checkpoint=...`, whose `dit/` folder this is) read a bare parameter folder. This reads only
the chosen parameter tree of the chosen step (no optimizer state is loaded: a 5B stage-3 state holds seven
model-sized trees) and writes it with `fc_jax.convert.common.save_params`.

`--which` names a field of the saved state: `params` or `ema_params` (stages 1 and 2), `generator`, `ema` or
`critic` (stage 3). The default is the EMA where the state has one (`ema_params`, `ema`), else `params`.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import orbax.checkpoint as ocp
from etils import epath

from fc_jax.convert.common import save_params

DEFAULT_ORDER = ("ema", "ema_params", "params")


def _state_tree(checkpoints: str, step: int) -> dict:
    """The saved state's metadata tree {field: ArrayMetadata tree | None} of `step`."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.metadata(_state_dir(checkpoints, step)).item_metadata.tree


def _state_dir(checkpoints: str, step: int):
    return epath.Path(checkpoints) / str(step) / "state"


def _parameter_fields(tree: dict) -> list[str]:
    """Fields of the state that hold a parameter tree (nested dicts of arrays), in saved order."""
    return [k for k, v in tree.items() if isinstance(v, dict) and v and k not in ("generator_opt", "critic_opt")]


def resolve_step(checkpoints: str, step: int | None) -> int:
    """`step`, checked to exist, or the latest step in `checkpoints`."""
    if not epath.Path(checkpoints).is_dir():
        raise FileNotFoundError(f"no checkpoints folder at {checkpoints} (expected WORKDIR/checkpoints of a run)")
    with ocp.CheckpointManager(checkpoints) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{checkpoints} holds no finished checkpoint")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ValueError(f"step {step} is not in {checkpoints}; saved steps: {steps}")
    return step


def read_parameters(checkpoints: str, step: int, which: str | None = None) -> tuple[str, dict]:
    """(the field read, its parameter tree as host-local jax Arrays on one device) from step `step`."""
    tree = _state_tree(checkpoints, step)
    fields = _parameter_fields(tree)
    if which is None:
        which = next((f for f in DEFAULT_ORDER if f in fields), None)
        if which is None:
            raise ValueError(f"{checkpoints}/{step}: no parameter tree among the state's fields {list(tree)}")
    elif which not in fields:
        raise ValueError(f"--which={which!r}: the state of {checkpoints}/{step} has parameter trees {fields}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = {which: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree[which])}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(_state_dir(checkpoints, step),
                                        args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                    partial_restore=True))
    return which, restored[which]


def export_parameters(workdir: str, dst: str, step: int | None = None, which: str | None = None) -> dict:
    """Write the parameters `which` of `step` (default: latest) of the run in `workdir` to the new folder `dst`.
    Returns a summary {step, which, parameters, dst}."""
    if epath.Path(dst).exists():
        raise FileExistsError(f"--dst {dst} already exists; choose a new folder")
    checkpoints = str(epath.Path(workdir) / "checkpoints")
    step = resolve_step(checkpoints, step)
    print(f"reading {which or 'the default parameters'} of step {step} from {checkpoints}", file=sys.stderr)
    which, params = read_parameters(checkpoints, step, which)
    count = sum(int(x.size) for x in jax.tree.leaves(params))
    print(f"writing {which}: {count:,} parameters to {dst}", file=sys.stderr)
    save_params(params, dst)
    return {"step": step, "which": which, "parameters": count, "dst": dst}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fc_jax.export", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the training run's folder (holds checkpoints/)")
    parser.add_argument("--dst", required=True, help="new folder for the parameters")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--which", default=None,
                        help="state field: params | ema_params | generator | ema | critic (default: the EMA if any)")
    args = parser.parse_args(argv)
    print(json.dumps(export_parameters(args.workdir, args.dst, args.step, args.which)))


if __name__ == "__main__":
    main()
