#!/usr/bin/env bash
# Run one fc_jax command as one process per node of a GPU cluster (all local GPUs per process).
#
# On each node, with the same arguments:
#   NUM_NODES=4 NODE_RANK=<0..3> COORDINATOR=<node0 host>:1234 launch/gpu.sh python -m fc_jax.train \
#       --config=configs/sft_teacher.py --workdir=/shared/sft_teacher --config.data.data_dir=/shared/latents
# Under SLURM (one task per node), nothing to set:
#   srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu.sh python -m fc_jax.train ...
# On a single node it just runs the command.
#
# It exports JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which fc_jax's
# jax.distributed.initialize() call reads (fc_jax.distributed). The workdir and data must be on storage
# every node sees. Needs fc_jax installed with pip install -e '.[cuda]'.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi

if [[ -n ${SLURM_NTASKS:-} && -z ${NUM_NODES:-} ]]; then
  NUM_NODES=$SLURM_NTASKS
  NODE_RANK=$SLURM_PROCID
  if [[ -z ${COORDINATOR:-} ]]; then
    HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    COORDINATOR="$HEAD:${COORDINATOR_PORT:-12345}"
  fi
fi

NUM_NODES=${NUM_NODES:-1}
if [[ $NUM_NODES -gt 1 ]]; then
  : "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1) on each node}"
  : "${COORDINATOR:?set COORDINATOR=host:port of node 0}"
  export JAX_COORDINATOR_ADDRESS=$COORDINATOR JAX_NUM_PROCESSES=$NUM_NODES JAX_PROCESS_ID=$NODE_RANK
fi
# Let XLA use nearly all GPU memory for the step (the default preallocates 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec "$@"
