#!/usr/bin/env bash
# Multi-node training with torchrun: run this script on every node, with the same settings
# except NODE_RANK (0 on the node whose address is MASTER_ADDR, 1..NNODES-1 on the others).
# Everything after the script's name goes to dtrain:
#
#   NODE_RANK=0 DTRAIN_RUN_DIR=/shared/runs/gpt1 launchers/torchrun_multinode.sh model=transformer trainer=ddp
#   NODE_RANK=1 DTRAIN_RUN_DIR=/shared/runs/gpt1 launchers/torchrun_multinode.sh model=transformer trainer=ddp
#
# Every process reads its rank and world from the variables torchrun sets, so any trainer=
# works unchanged (ddp, fsdp, model_parallel, pipeline, ...). Edit the defaults below or set
# them in the environment.
set -euo pipefail

NNODES=${NNODES:-2}                   # how many nodes take part
NODE_RANK=${NODE_RANK:-0}             # this node's place among them
NPROC_PER_NODE=${NPROC_PER_NODE:-1}   # processes on this node: one per GPU (or CPU ranks)
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} # node 0's address, reachable from every node
MASTER_PORT=${MASTER_PORT:-29500}     # a free port on node 0
PYTHON=${PYTHON:-python}              # the Python of the environment dtrain is installed in

# All nodes must write one run directory (on a shared file system): there is no default,
# because each node would pick its own time-stamped one.
: "${DTRAIN_RUN_DIR:?set DTRAIN_RUN_DIR to one run directory, the same on every node}"
export DTRAIN_RUN_DIR

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node-rank="$NODE_RANK" --nproc-per-node="$NPROC_PER_NODE" \
    --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" \
    -m dtrain trainer.num_nodes="$NNODES" trainer.devices="$NPROC_PER_NODE" "$@"
