"""Data-parallel scaling on this machine's cores (issue: Performance, 4; goal: efficiency >= 0.9).

The default transformer trains with 1 process x 1 thread, then with 2 processes x 1 thread under
each data-parallel strategy. Each rank keeps the single process's batch (weak scaling: the global
batch doubles, as a cluster user doubling the GPUs would), so

    efficiency = tokens/s of the 2-process run / (2 x tokens/s of the 1-process run)

with tokens/s the median over the run's logging windows (`callbacks.records`, summary.json),
start-up and validation excluded. `--strong` keeps the global batch instead (each rank does half).
The runs take turns, `--repeats` times; the JSON gives the median efficiency and each repeat's.

    .venv/bin/python benchmarks/ddp_scaling.py [--strategies ddp fsdp deepspeed_zero2] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 32  # the default transformer's batch (conf/data/text.yaml)


def tokens_per_second(trainer: str, batch: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "dtrain", "model=transformer", f"trainer={trainer}", f"data.batch_size={batch}",
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=null",
            "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "test=false", "logger=[csv]",
            "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false", "runtime.threads=1", f"hydra.run.dir={run_dir}",
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
        if done.returncode:
            raise SystemExit(f"trainer={trainer} failed:\n{done.stderr[-3000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
    return summary["train/tokens_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp", "deepspeed_zero2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--strong", action="store_true", help="keep the global batch (each rank does half)")
    args = parser.parse_args()
    single, runs = [], {name: [] for name in args.strategies}
    for _ in range(args.repeats):
        single.append(tokens_per_second("cpu", BATCH, args.steps))
        for name in args.strategies:
            runs[name].append(tokens_per_second(name, BATCH if args.strong else 2 * BATCH, args.steps))
    one = statistics.median(single)
    report = {"model": "transformer", "scaling": "strong" if args.strong else "weak", "batch_per_rank": BATCH // 2 if args.strong else BATCH,
              "load": os.getloadavg()[0], "one_process_tokens_per_s": round(one, 1), "strategies": {}}
    for name, values in runs.items():
        report["strategies"][name] = {
            "tokens_per_s": round(statistics.median(values), 1),
            "efficiency": round(statistics.median(values) / (2 * one), 3),
            "efficiency_each": [round(v / (2 * s), 3) for v, s in zip(values, single)],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
