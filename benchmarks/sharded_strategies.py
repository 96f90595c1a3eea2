"""Throughput and plan of each sharded trainer on one model: prints one JSON object per trainer.

    python benchmarks/sharded_strategies.py [--model transformer] [--steps 30] [trainer ...] [-- overrides]

Each trainer trains `--steps` steps (no validation, no checkpoints) and reports the median
`train/samples_per_sec` it logged, its wall time, and dtrain.plan's memory estimate per device.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ("ddp", "fsdp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero2_offload", "deepspeed_zero3_offload")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="transformer")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("trainers", nargs="*", default=list(TRAINERS))
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    sys.path.insert(0, str(REPO))
    from dtrain.config.compose import compose
    from dtrain.plan import GIB, make_plan

    for trainer in args.trainers:
        run_args = [f"model={args.model}", f"trainer={trainer}", f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1",
                    "trainer.limit_val_batches=0", "trainer.log_every_n_steps=5", "test=false", "logger=[csv]",
                    "~callbacks.best_checkpoint", "~callbacks.last_checkpoint", "trainer.enable_progress_bar=false", *overrides]
        plan = make_plan(compose(run_args))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "dtrain", *run_args], cwd=REPO, capture_output=True, text=True,
                                    env={**os.environ, "DTRAIN_RUN_DIR": tmp, "WANDB_MODE": "offline"})
            wall = time.perf_counter() - start
            rates = []
            for path in Path(tmp).rglob("metrics.csv"):
                with path.open() as f:
                    rates += [float(r["train/samples_per_sec"]) for r in csv.DictReader(f) if r.get("train/samples_per_sec")]
        print(json.dumps({
            "trainer": trainer, "model": args.model, "ok": result.returncode == 0, "steps": args.steps, "wall_s": round(wall, 1),
            "samples_per_sec": statistics.median(rates) if rates else None, "params": plan.params,
            "plan_gib_per_device": {k: round(v / GIB, 4) for k, v in plan.device_bytes.items()},
            "plan_host_gib": {k: round(v / GIB, 4) for k, v in plan.host_bytes.items()},
            **({} if result.returncode == 0 else {"stderr_tail": result.stderr[-800:]}),
        }), flush=True)


if __name__ == "__main__":
    main()
