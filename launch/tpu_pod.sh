#!/usr/bin/env bash
# Run one fc_jax command on every worker of a Cloud TPU pod slice, all workers the same command.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [--project=P] -- python -m fc_jax.train \
#       --config=configs/sft_teacher.py --workdir=gs://BUCKET/sft_teacher --config.data.data_dir=gs://BUCKET/latents
#
# Each worker must have the repository at $FC_JAX_DIR (default ~/fc_jax) with fc_jax installed (pip install -e
# '.[tpu]'); set FC_JAX_SETUP=1 to copy the local checkout there and install it first. The workdir and data must
# be on storage every worker reads (gs://). JAX finds the pod's coordinator itself (fc_jax.train calls
# jax.distributed.initialize() when it sees a multi-worker slice); only process 0 writes logs and event files.
# The job runs under nohup on the workers; its output goes to $FC_JAX_LOG (default ~/fc_jax.log) there.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2
shift 2
EXTRA=()
while [[ $# -gt 0 && $1 != "--" ]]; do EXTRA+=("$1"); shift; done
[[ ${1:-} == "--" ]] || { echo "expected -- before the command" >&2; exit 2; }
shift
DIR=${FC_JAX_DIR:-'~/fc_jax'}
LOG=${FC_JAX_LOG:-'~/fc_jax.log'}

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${EXTRA[@]}" --worker=all --command="$1"
}

if [[ ${FC_JAX_SETUP:-0} == 1 ]]; then
  REPO=$(cd "$(dirname "$0")/.." && pwd)
  tar -C "$REPO" --exclude=.git --exclude='*.egg-info' -czf /tmp/fc_jax_src.tgz .
  gcloud compute tpus tpu-vm scp /tmp/fc_jax_src.tgz "$TPU_NAME":/tmp/fc_jax_src.tgz --zone="$ZONE" "${EXTRA[@]}" --worker=all
  ssh_all "mkdir -p $DIR && tar -C $DIR -xzf /tmp/fc_jax_src.tgz && cd $DIR && python3 -m pip install -q -e '.[tpu]'"
fi

CMD=$(printf '%q ' "$@")
ssh_all "cd $DIR && nohup $CMD > $LOG 2>&1 &"
echo "started on all workers of $TPU_NAME; follow with:" >&2
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE ${EXTRA[*]} --worker=0 --command='tail -f $LOG'" >&2
