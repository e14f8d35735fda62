"""Multi-process start-up and per-process helpers.

`initialize(mode)` calls `jax.distributed.initialize()` when the platform provides a cluster:
- TPU pods (several TPU VM workers): JAX finds the coordinator, process count and ids itself;
- GPU clusters: `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (and optionally
  `JAX_LOCAL_DEVICE_IDS`, comma separated) from the environment, as `launch/gpu.sh` sets them; SLURM and
  Open MPI jobs are detected by JAX itself.
Single-host runs need nothing. Only process 0 writes logs and event files (`is_main_process`).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

log = logging.getLogger(__name__)

MODES = ("auto", "always", "never")


def _multi_host_tpu() -> bool:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1 or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ


def _cluster_env() -> bool:
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        return True
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return True
    return False


def initialize(mode: str = "auto") -> None:
    """Join the cluster (see the module docstring). "auto": only where a cluster is detected; "always":
    call `jax.distributed.initialize()` regardless (its own detection decides); "never": single process."""
    if mode not in MODES:
        raise ValueError(f"config.distributed.initialize must be one of {MODES}; got {mode!r}")
    if mode == "never" or (mode == "auto" and not (_multi_host_tpu() or _cluster_env())):
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        if os.environ.get("JAX_LOCAL_DEVICE_IDS"):
            kwargs["local_device_ids"] = [int(i) for i in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
    jax.distributed.initialize(**kwargs)
    log.info("joined the cluster: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is True on any (a host-level all-gather; free on one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))).any())


def sync(name: str) -> None:
    """A barrier across processes (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
