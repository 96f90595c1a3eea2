"""Cores never oversubscribed: one dtrain run alone (1 thread, and `runtime.threads=auto`), and two
runs started side by side (auto), each step's speed against the run alone on 1 thread. Prints one
JSON object.

    python benchmarks/threads.py [--repeats 5] [--steps 300] [--torch-defaults] [-- overrides]

The model is a small transformer (model=transformer, d_model 64, 2 layers, 4 heads, 32 tokens,
batch 16; about 10-20 ms a step on one core here), trained without validation, checkpoints or
test. A callback this file adds stamps the wall clock at every training step's end; a run's step
time is the median interval after the first 20 steps, and for two runs side by side only over the
time both were training. Each repeat runs every case once, in turn, so that a shared machine's
drifts hit all alike; figures are medians over the repeats, every repeat listed beside them.
`--torch-defaults` adds the pair as it ran before runtime.threads: every core each and OpenMP's
default wait policy (slow: up to a second a step), over fewer steps.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
SMALL_TRANSFORMER = (
    "model=transformer", "model.net.d_model=64", "model.net.n_layers=2", "model.net.n_heads=4", "data.block_size=32",
    "data.batch_size=16", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "test=false",
    "logger=[csv]", "trainer.enable_progress_bar=false", "~callbacks.best_checkpoint", "~callbacks.last_checkpoint",
)
WARMUP = 20


class StepStamps(Callback):
    """Writes the wall clock at the end of every training step to `path` (JSON) when training ends."""

    def __init__(self, path: str):
        self.path, self.stamps = Path(path), []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.time())

    def on_train_end(self, trainer, pl_module):
        self.path.write_text(json.dumps({"stamps": self.stamps, "threads": torch.get_num_threads()}))


def start(name: str, tmp: Path, steps: int, overrides: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    stamps = tmp / f"{name}.json"
    args = [*SMALL_TRANSFORMER, f"trainer.max_steps={steps}", f"paths.runs_dir={tmp / 'runs'}",
            "+callbacks.stamps._target_=benchmarks.threads.StepStamps", f"+callbacks.stamps.path={stamps}", *overrides]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "dtrain", *args], cwd=tmp, env=environment, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True), stamps


def finish(runs: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    results = []
    for proc, stamps in runs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a run failed:\n{err[-2000:]}")
        results.append(json.loads(stamps.read_text()))
    return results


def step_time(stamps: list[float], window: tuple[float, float] | None = None) -> float:
    """The median interval between step ends after the warm-up (only inside `window` if given)."""
    kept = stamps[WARMUP:]
    pairs = [(b - a) for a, b in zip(kept, kept[1:]) if window is None or (window[0] <= a and b <= window[1])]
    return statistics.median(pairs)


def alone(tmp: Path, steps: int, overrides: list[str], threads: str) -> dict:
    (result,) = finish([start(f"alone-{threads}", tmp, steps, [f"runtime.threads={threads}", *overrides])])
    return {"step_s": step_time(result["stamps"]), "threads": result["threads"]}


def side_by_side(tmp: Path, steps: int, overrides: list[str], threads: str, env: dict | None = None) -> dict:
    runs = [start(f"pair{i}-{threads}", tmp, steps, [f"runtime.threads={threads}", *overrides], env) for i in range(2)]
    results = finish(runs)
    both = (max(r["stamps"][WARMUP] for r in results), min(r["stamps"][-1] for r in results))
    return {"step_s": [step_time(r["stamps"], both) for r in results], "threads": [r["threads"] for r in results],
            "overlap_s": both[1] - both[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--torch-defaults", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    repeats = []
    with tempfile.TemporaryDirectory(prefix="dtrain-threads-") as folder:
        tmp = Path(folder)
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            one, auto = alone(tmp, args.steps, args.overrides, "1"), alone(tmp, args.steps, args.overrides, "auto")
            pair = side_by_side(tmp, args.steps, args.overrides, "auto")
            repeat = {"load_1min": load, "alone_1_thread": one, "alone_auto": auto, "side_by_side_auto": pair,
                      "alone_auto_speed_vs_1_thread": one["step_s"] / auto["step_s"],
                      "side_by_side_speed_vs_alone_1_thread": [one["step_s"] / s for s in pair["step_s"]]}
            if args.torch_defaults:  # all cores each, libgomp's default spinning (GOMP_SPINCOUNT is its default)
                cores = str(len(os.sched_getaffinity(0)))
                old = side_by_side(tmp, max(WARMUP + 10, args.steps // 10), args.overrides, cores, env={"GOMP_SPINCOUNT": "300000"})
                repeat["side_by_side_torch_defaults"] = old
                repeat["side_by_side_torch_defaults_speed_vs_alone_1_thread"] = [one["step_s"] / s for s in old["step_s"]]
            repeats.append(repeat)
            print(json.dumps(repeat), file=sys.stderr)

    def median(key):
        values = [r[key] for r in repeats]
        return [statistics.median(v[i] for v in values) for i in range(2)] if isinstance(values[0], list) else statistics.median(values)

    keys = ["alone_auto_speed_vs_1_thread", "side_by_side_speed_vs_alone_1_thread"]
    keys += ["side_by_side_torch_defaults_speed_vs_alone_1_thread"] if args.torch_defaults else []
    summary = {key: median(key) for key in keys}
    summary["alone_1_thread_step_s"] = statistics.median(r["alone_1_thread"]["step_s"] for r in repeats)
    summary["threads_auto_alone"] = repeats[0]["alone_auto"]["threads"]
    summary["threads_auto_side_by_side"] = repeats[0]["side_by_side_auto"]["threads"]
    print(json.dumps({"cores": len(os.sched_getaffinity(0)), "repeats": len(repeats), "median": summary, "each": repeats}, indent=1))


if __name__ == "__main__":
    main()
