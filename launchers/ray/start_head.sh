#!/usr/bin/env bash
# Start a Ray head by hand on this machine (no autoscaler), for `sweep.address=<this host>:PORT`.
#   launchers/ray/start_head.sh [PORT] [extra `ray start` flags, e.g. --num-gpus=4]
# Stop it with `kill <pid>` of this script's ray process (it runs in the foreground with --block).
set -euo pipefail
PORT="${1:-6379}"; shift || true
RAY="${RAY:-$(dirname "$0")/../../.venv/bin/ray}"
IP="${RAY_NODE_IP:-$(hostname -I | awk '{print $1}')}"
echo "Ray head at ${IP}:${PORT}: sweeps join with  python -m dtrain.tune ... sweep.address=${IP}:${PORT}"
echo "workers join with  launchers/ray/start_worker.sh ${IP}:${PORT}"
exec "$RAY" start --head --block --port="$PORT" --node-ip-address="$IP" --include-dashboard=false --disable-usage-stats "$@"
