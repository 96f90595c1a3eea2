"""Runs every test that feeds the README's fault matrix (tests/fault_matrix.py), then writes the
matrix into README.md from what they recorded.

    .venv/bin/python scripts/fault_matrix.py                  # every fault test (about 30 minutes), then the README
    .venv/bin/python scripts/fault_matrix.py --from-records   # the README from the records the last test runs left
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fault_matrix import RECORDS_DIR, load, missing, render, write_readme  # noqa: E402

FAULT_TESTS = [
    "tests/test_resume.py", "tests/test_resume_strategies.py::test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run",
    "tests/test_atomic_checkpoints.py", "tests/test_dead_rank.py", "tests/test_stop_on_signal.py",
    "tests/test_slurm.py::test_preempted_job_checkpoints_requeues_and_resumes_to_the_same_weights",
    "tests/test_nonfinite.py::test_a_nan_loss_stops_the_run_at_its_step_and_keeps_the_last_good_checkpoint",
    "tests/test_nonfinite.py::test_under_ddp_every_rank_stops_and_one_line_is_printed",
    "tests/test_bad_data.py::test_a_disk_that_fills_mid_run_stops_it_cleanly_and_resume_finishes",
    "tests/test_bad_data.py::test_a_loader_worker_that_dies_ends_the_run_in_one_line",
    "tests/test_bad_data.py::test_the_host_running_out_of_memory_names_the_planner",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-records", action="store_true", help="do not run the tests; write what they last recorded")
    args = parser.parse_args()
    if not args.from_records:
        shutil.rmtree(RECORDS_DIR, ignore_errors=True)  # only this run's results
        # scripts/test.sh: the venv, and the loopback-only network namespace the suite runs in.
        done = subprocess.run(["bash", "scripts/test.sh", "-q", "-m", "not bars", *FAULT_TESTS], cwd=REPO)  # the `faults` tests too
        if done.returncode != 0:
            print("fault_matrix: a fault test failed; README.md left as it was", file=sys.stderr)
            return done.returncode
    cells = load()
    absent = missing(cells)
    if absent:
        print(f"fault_matrix: no record of {', '.join(absent)}; README.md left as it was", file=sys.stderr)
        return 1
    write_readme(render(cells))
    print(f"README.md: fault matrix written from {len(cells)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
