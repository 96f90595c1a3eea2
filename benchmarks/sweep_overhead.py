"""How much of a sweep's wall time is not the trials' own training: prints one JSON object.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python benchmarks/sweep_overhead.py [--trials 8] [-- train overrides]'

Runs `python -m dtrain.tune` as a user would (Ray started on this machine, one trial at a time,
so that wall time and trial time compare directly) and reads, per trial, the seconds from the
start of fit to the end of test (tests/ray_probes.py RunClock) less the seconds spent reporting
to Tune (checkpoint writes and Ray's copies, dtrain/tune/report.py). Everything else (Ray's
start, actor start-up, composing, building the Trainer, Tune's bookkeeping) is overhead.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=24)
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"] or ["model=cnn", "data.batch_size=32"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DTRAIN_RUNS_DIR": f"{tmp}/runs", "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        command = [
            sys.executable, "-m", "dtrain.tune", "sweep=mlp_smoke", *overrides, f"trainer.max_epochs={args.epochs}",
            f"sweep.num_samples={args.trials}", "sweep.max_concurrent_trials=1", "sweep.verbose=0", "logger=[csv]",
            "space.model.optimizer.lr=loguniform(3e-4,3e-3)", "+callbacks.clock._target_=tests.ray_probes.RunClock",
        ]
        start, started_at = time.perf_counter(), time.time()
        out = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        trials = sorted(Path(tmp, "runs", "sweeps").glob("*/*/trials/*"))
        clocks = [json.loads((t / "run_clock.json").read_text()) for t in trials]
        run_seconds = sum(c["seconds"] for c in clocks)
        first_fit = min(c["started_at"] for c in clocks) - started_at
        report_seconds = sum(json.loads((t / "tune_report.json").read_text())["seconds"] for t in trials)
        training = run_seconds - report_seconds
        print(json.dumps({
            "trials": len(trials), "epochs_per_trial": args.epochs, "overrides": overrides, "wall_s": round(wall, 2),
            "training_s": round(training, 2), "reporting_s": round(report_seconds, 2),
            "until_first_trial_trains_s": round(first_fit, 2),
            "overhead_per_later_trial_s": round((wall - first_fit - run_seconds) / max(1, len(trials) - 1), 2),
            "overhead_fraction": round(1 - training / wall, 4), "goal": 0.15,
        }))


if __name__ == "__main__":
    main()
