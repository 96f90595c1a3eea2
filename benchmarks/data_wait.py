"""Does data loading starve training? The data-wait fraction of every model's default run
(issue: Performance, 5; goal: under 5% for each).

Each model option (conf/model/*.yaml) trains with its own default data, trainer and callbacks for
`--steps` optimizer steps; `callbacks.records` measures, per logging window, the time Lightning's
loop spent fetching training batches (dtrain's default profiler keeps it; epoch boundaries and
validation excluded) as a share of the window (`train/data_wait_frac`), and its median over the
run lands in summary.json. The JSON gives it
per model, with the median step time beside it.

    .venv/bin/python benchmarks/data_wait.py [--models mlp cnn ...] [--steps 60]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.05


def model_options() -> list[str]:
    return sorted(p.stem for p in (REPO / "dtrain" / "conf" / "model").glob("*.yaml"))


def data_wait(model: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "dtrain", f"model={model}", f"trainer.max_steps={steps}", "test=false", "logger=[csv]",
            "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
        if done.returncode:
            return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        summary = json.loads((run_dir / "summary.json").read_text())
    wait = summary.get("train/data_wait_frac")
    return {
        "data_wait_frac": None if wait is None else round(wait, 4),
        "step_time_ms": round(1e3 * summary["train/step_time_s"], 2) if "train/step_time_s" in summary else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=model_options())
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    results = {model: data_wait(model, args.steps) for model in args.models}
    measured = {m: r["data_wait_frac"] for m, r in results.items() if r.get("data_wait_frac") is not None}
    print(json.dumps({
        "steps": args.steps, "goal": GOAL, "load": os.getloadavg()[0], "models": results,
        "over_goal": sorted(m for m, frac in measured.items() if frac >= GOAL),
    }, indent=2))


if __name__ == "__main__":
    main()
