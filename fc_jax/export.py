"""Export one network from a training checkpoint: `python -m fc_jax.export --workdir=DIR --dst=DIR [--step=N]
[--which=NAME]`.

Every stage checkpoints its whole state (parameters, optimizer moments, EMA, RNG) under `WORKDIR/checkpoints`;
the next stage (`config.train.init_from`, `config.distill.teacher_from`, `generator_from`) and inference
(`fc_jax.generate --checkpoint=...`, whose `dit/` folder this is) read a bare parameter folder. This reads only
the chosen parameter tree of the chosen step (no optimizer state is loaded: a 5B stage-3 state holds seven
model-sized trees) and writes it with `fc_jax.convert.common.save_params`.

`--which` names a field of the saved state: `params` or `ema_params` (stages 1 and 2), `generator`, `ema` or
`critic` (stage 3). The default is the first of the run's stage's `exports` (`fc_jax.training.stages`; the stage is
read from the config saved with the checkpoint) that the state holds: the EMA where there is one.
"""

from __future__ import annotations

import json
import sys

import jax
import orbax.checkpoint as ocp
from absl import flags
from etils import epath

from fc_jax import cli
from fc_jax.convert.common import save_params

FLAGS = flags.FlagValues()  # private: importing export_parameters defines no global flags
flags.DEFINE_string("workdir", None, "the training run's folder (holds checkpoints/)", flag_values=FLAGS)
flags.DEFINE_string("dst", None, "new folder for the parameters", flag_values=FLAGS)
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=FLAGS)
flags.DEFINE_string("which", None,
                    "state field: params | ema_params | generator | ema | critic (default: the EMA if any)",
                    flag_values=FLAGS)
flags.mark_flags_as_required(["workdir", "dst"], flag_values=FLAGS)

def _state_tree(checkpoints: str, step: int) -> dict:
    """The saved state's metadata tree {field: ArrayMetadata tree | None} of `step`."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.metadata(_state_dir(checkpoints, step)).item_metadata.tree


def _state_dir(checkpoints: str, step: int):
    return epath.Path(checkpoints) / str(step) / "state"


def _stage_exports(checkpoints: str, step: int) -> tuple[str, ...]:
    """The parameter trees the run's stage exports, its default first (from the config saved with `step`)."""
    from fc_jax.training.stages import get_stage

    config = json.loads((epath.Path(checkpoints) / str(step) / "config" / "metadata").read_text())
    return get_stage(config.get("stage", "sft")).exports


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
        which = next((f for f in _stage_exports(checkpoints, step) if f in fields), None)
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
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, "python -m fc_jax.export", argv, description=__doc__.split("\n\n")[0])
    print(json.dumps(export_parameters(FLAGS.workdir, FLAGS.dst, FLAGS.step, FLAGS.which)))


def run() -> None:
    """Console-script entry point (fc-jax-export)."""
    main()


if __name__ == "__main__":
    run()
