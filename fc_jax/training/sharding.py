"""The device mesh and the logical-axis rules, both config data (DESIGN: "Scale is a config").

Mesh axes are `data`, `fsdp`, `tensor`, `sequence` (sizes from `config.mesh`; one of them may be -1 = the rest of
the devices). Logical axis names (`batch`, `tokens`, `embed`, `heads`, ...) carried by every parameter and the main
activations map onto them through `config.sharding.rules`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

Rules = tuple[tuple[str, Any], ...]


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
    """Axis sizes for `num_devices` devices from a config with one entry per mesh axis (one may be -1)."""
    given = {k: int(v) for k, v in dict(mesh_config).items()}
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"config.mesh names unknown axes {unknown}; the mesh axes are {list(MESH_AXES)}")
    sizes = [given.get(axis, 1) for axis in MESH_AXES]
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh {given}: sizes must be positive, with at most one -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh {given}: the fixed axes take {fixed} devices, which does not divide the "
                f"{num_devices} devices found"
            )
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh {given} needs {math.prod(sizes)} devices, found {num_devices}"
        )
    return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all devices of all processes) with Auto axes."""
    shape = mesh_shape(mesh_config, jax.device_count() if devices is None else len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(config) -> Rules:
    """The config's logical-axis rules as a tuple of (logical name, mesh axis | tuple of axes | None)."""
    rules = []
    for entry in config.sharding.rules:
        name, axes = entry
        targets = axes if isinstance(axes, (tuple, list)) else (axes,)
        for axis in targets:
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(
                    f"sharding rule {name!r} -> {axes!r} names mesh axis {axis!r}; the mesh axes are {MESH_AXES}"
                )
        rules.append((name, tuple(axes) if isinstance(axes, list) else axes))
    return tuple(rules)


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
    """Logical axis names of one array -> a PartitionSpec. Rules apply in order: a rule gives its mesh axes to
    the first dimension of its name not yet assigned, if none of those mesh axes is used yet; what is left is
    unsharded. (Like flax's `logical_to_mesh_axes`, but a name may occur twice, as in the DiT's
    ("embed", "embed") matrices: the first occurrence is sharded.)"""
    result: list[Any] = [None] * len(names)
    assigned = [False] * len(names)
    used: set[str] = set()
    for name, axes in rules:
        targets = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,)) if a is not None)
        for pos, dim in enumerate(names):
            if dim == name and not assigned[pos]:
                if not used.intersection(targets):
                    result[pos] = axes if targets else None
                    used.update(targets)
                assigned[pos] = True
                break
    return PartitionSpec(*result)


def tree_shardings(boxed_abstract, mesh: Mesh, rules: Rules):
    """NamedShardings for a tree whose leaves may be flax `LogicallyPartitioned` boxes (unboxed leaves are
    replicated), in the structure of the unboxed tree."""

    def one(leaf):
        if isinstance(leaf, nn.Partitioned):
            return NamedSharding(mesh, logical_to_spec(leaf.names, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, boxed_abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def logical_sharding(names: Sequence[str | None], mesh: Mesh, rules: Rules) -> NamedSharding:
    """The NamedSharding of one array whose axes carry the logical `names`."""
    return NamedSharding(mesh, logical_to_spec(tuple(names), rules))


def batch_axis_size(mesh: Mesh, rules: Rules) -> int:
    """How many ways the `batch` logical axis is split on this mesh."""
    spec = logical_to_spec(("batch",), rules)[0]
    if spec is None:
        return 1
    axes = spec if isinstance(spec, tuple) else (spec,)
    return math.prod(mesh.shape[a] for a in axes)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules):
    """Trace inside this to make the model's `nn.with_logical_constraint` calls bind to `mesh` via `rules`."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def global_batch(local: dict, shardings: dict) -> dict:
    """Per-process numpy arrays -> global jax Arrays, each process contributing its rows of the batch axis."""
    return {
        k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v)) for k, v in local.items()
    }
