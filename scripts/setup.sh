#!/usr/bin/env bash
# Creates .venv with dtrain and its dependencies: `bash scripts/setup.sh` (training) or
# `bash scripts/setup.sh test` (training + everything the tests need). Re-running is cheap: the
# venv is rebuilt only when pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
# The tests run a real one-node Slurm (slurm/local/start.sh); its Debian packages go in when we
# are root and they are missing. Outside the venv stamp: they live on the machine, not in .venv.
if [ "$extras" = test ] && [ "$(id -u)" = 0 ] && ! command -v slurmctld >/dev/null; then
  if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-cache show slurmctld >/dev/null 2>&1 || apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
fi
stamp=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${extras}
if [ -f .venv/.dtrain-stamp ] && [ "$(cat .venv/.dtrain-stamp)" = "$stamp" ]; then
  exit 0
fi
rm -rf .venv
python3.11 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned to the build on this machine's disk, so no resolver pulls a second one.
pip install -q torch==2.14.1 torchvision==0.29.1
if [ "$extras" = test ]; then
  pip install -q -e ".[test]"
  # DeepSpeed's build would otherwise pull a torch of its own.
  pip install -q --no-build-isolation deepspeed
else
  pip install -q -e .
fi
echo "$stamp" > .venv/.dtrain-stamp
