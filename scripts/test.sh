#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the test suite in three stages: the default tests, the slow
# ones (long multi-process runs), then the convergence bars (every model reaching its bar, with
# its time to the bar printed at the end), then the README's fault matrix against what they found.
# Pass pytest arguments to run a subset instead, in one process, e.g. `-m bars -k vision`.
# Inside a loopback-only network namespace where we may make one, since Ray otherwise probes
# and binds the machine's external interface.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ $# -gt 0 ]; then
  tests='.venv/bin/python -m pytest "$@"'  # sh -c gets the arguments as its own, each one whole
else
  # A pytest-xdist worker per core (at most 4), each taking a whole file at a time so a file's
  # shared runs and clusters start once; each worker's runs compute on one thread (conftest.py).
  # --durations: each stage's slowest tests, for keeping .ci/run within its time. The fault
  # matrix's test reads what every other stage recorded, so it runs alone, after them.
  pytest='.venv/bin/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile'
  tests="$pytest --durations=20 -m 'not slow and not bars and not faults' \
    && $pytest --durations=20 -m 'slow and not bars and not faults' --deselect tests/test_fault_matrix.py \
    && $pytest -m bars \
    && .venv/bin/python -m pytest -q -m 'slow and not faults' tests/test_fault_matrix.py"
fi
if unshare -n true 2>/dev/null; then
  exec unshare -n sh -c "ip link set lo up && $tests" sh "$@"
else
  exec sh -c "$tests" sh "$@"
fi
