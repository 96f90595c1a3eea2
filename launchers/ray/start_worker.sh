#!/usr/bin/env bash
# Join this machine to a running Ray head as a worker node.
#   launchers/ray/start_worker.sh HEAD_IP:PORT [extra `ray start` flags, e.g. --num-gpus=8]
# The sweep directory (sweep.storage_path) must be mounted here at the same path as on the head.
set -euo pipefail
ADDRESS="${1:?usage: start_worker.sh HEAD_IP:PORT [ray start flags]}"; shift
RAY="${RAY:-$(dirname "$0")/../../.venv/bin/ray}"
IP="${RAY_NODE_IP:-$(hostname -I | awk '{print $1}')}"
exec "$RAY" start --block --address="$ADDRESS" --node-ip-address="$IP" --disable-usage-stats "$@"
