"""Is every model option deterministic on the CPU? (issue 11, item 9)

Each model option (conf/model/*.yaml) trains twice with `seed=N trainer.deterministic=true` and
its own default data, for the smoke budget (a few steps, one validation, the test stage). The two
runs must give bitwise identical weights (every tensor of the last checkpoint's state_dict) and
identical logged values (every cell of metrics.csv but the time-like columns: step times, rates,
throughput, which measure the machine, not the model). The JSON names the models that differ
and where.

    .venv/bin/python benchmarks/determinism.py [--models mlp cnn ...] [--seed 7]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Columns that time the machine (records' throughput and step times): never equal twice.
TIMED = ("per_sec", "step_time", "data_wait", "tflops", "mfu", "time", "memory")


def model_options() -> list[str]:
    return sorted(p.stem for p in (REPO / "dtrain" / "conf" / "model").glob("*.yaml"))


def train(model: str, seed: int, run_dir: Path) -> str | None:
    command = [
        sys.executable, "-m", "dtrain", f"model={model}", "budget=smoke", f"seed={seed}", "trainer.deterministic=true",
        "logger=[csv]", "trainer.enable_progress_bar=false", "runtime.threads=1", f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def logged_values(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return {(i, key): value for i, row in enumerate(rows) for key, value in row.items() if not any(t in key for t in TIMED)}


def weights(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def compare(model: str, seed: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(tmp) / "a", Path(tmp) / "b"]
        for run_dir in runs:
            error = train(model, seed, run_dir)
            if error:
                return {"error": error}
        a, b = (weights(run) for run in runs)
        differing_weights = sorted(name for name in a if not torch.equal(a[name], b[name]))
        logged_a, logged_b = (logged_values(run) for run in runs)
        differing_values = sorted({key for (_, key) in set(logged_a.items()) ^ set(logged_b.items())})
    return {
        "deterministic": not differing_weights and not differing_values,
        "tensors": len(a),
        "differing_weights": differing_weights[:5],
        "differing_logged": differing_values[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=model_options())
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    results = {model: compare(model, args.seed) for model in args.models}
    print(json.dumps({
        "seed": args.seed, "models": results,
        "not_deterministic": sorted(m for m, r in results.items() if r.get("deterministic") is False),
        "failed": sorted(m for m, r in results.items() if "error" in r),
    }, indent=2))


if __name__ == "__main__":
    main()
