#!/usr/bin/env bash
# Stop the cluster slurm/local/start.sh started in DIR: only the daemons whose pids are in
# DIR/run (never by name: other clusters may be running on this machine).
set -uo pipefail
dir=${1:-${DTRAIN_SLURM_DIR:?give the cluster folder as an argument or in DTRAIN_SLURM_DIR}}
pids=()
for file in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir/run/munged.pid"; do
  [ -f "$file" ] || continue
  daemon=$(basename "$file" .pid); daemon=${daemon%%-*}
  pid=$(cat "$file")
  # A pid file left behind may name a process that is someone else's by now.
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$daemon" ]; then
    kill "$pid" && pids+=("$pid")
  fi
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
exit 0
