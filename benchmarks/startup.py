"""How long dtrain takes to start: `--help`, a mistake on the command line, and the default run up
to its first optimizer step. Prints one JSON object.

    python benchmarks/startup.py [--repeats 5] [--first-step-repeats 3] [--skip-first-step]

Each figure is the median wall time of `--repeats` fresh processes (`python -m dtrain ...`), from
just before the process is started to its exit (or, for the default run, to the end of its first
optimizer step, stamped by a callback this file adds). Whether each command imported torch is read
from a `-X importtime` run of it; its five slowest imports (cumulative) are listed beside it.
The default run's stamps say where its time goes: until the callbacks exist (imports, composing
and checking the config, the data), Lightning's setup, the sanity check, the first step.
Beside it, in turns with it, the floor: a process that only imports the libraries the default run
loads (Hydra, torch, Lightning, torchmetrics, W&B, scikit-learn) and exits; the default run's first
step less the floor is what dtrain itself adds (composing, checking, data, set-up, W&B's start).
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

from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]

# A command per kind of mistake: composition (an option that does not exist), key, type, path.
COMMANDS = {
    "help": ["--help"],
    "unknown option": ["model=nope"],
    "unknown key": ["trainer.max_epoch=3"],
    "wrong type": ["trainer.max_epochs=abc"],
    "missing path": ["model=transformer", "data.path=/no/such/corpus"],
}


class FirstStep(Callback):
    """Stamps the wall clock at the moments of a run's start, and stops it after its first optimizer step."""

    def __init__(self, path: str):
        self.path, self.stamps = Path(path), {"callbacks built": time.time()}

    def setup(self, trainer, pl_module, stage):
        self.stamps.setdefault("setup", time.time())

    def on_sanity_check_start(self, trainer, pl_module):
        self.stamps["sanity check start"] = time.time()

    def on_train_start(self, trainer, pl_module):
        self.stamps["train start"] = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "first step" not in self.stamps:
            self.stamps["first step"] = time.time()
            self.path.write_text(json.dumps(self.stamps))
            trainer.should_stop = True


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    return env


def timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dtrain", *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    return time.perf_counter() - start, done


def imports(args: list[str], cwd: Path) -> dict:
    """Whether the command imports torch, and its slowest imports (cumulative seconds)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dtrain", *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.removeprefix("import time:").split("|")
            if cumulative.strip().isdigit():
                rows.append((int(cumulative) / 1e6, name.rstrip()))
    top = [f"{name.strip()} {seconds:.3f}" for seconds, name in sorted(rows, reverse=True) if not name.startswith("  ")][:5]
    return {"imports_torch": any(name.strip() == "torch" for _, name in rows), "slowest_imports_s": top}


def commands(repeats: int, cwd: Path) -> dict:
    results = {}
    for label, args in COMMANDS.items():
        times, done = [], None
        for _ in range(repeats):
            seconds, done = timed(args, cwd)
            times.append(seconds)
        results[label] = {
            "command": "python -m dtrain " + " ".join(args), "exit_code": done.returncode,
            "message": (done.stderr.strip().splitlines() or [""])[-1][:160] if label != "help" else None,
            "median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times], **imports(args, cwd),
        }
    return results


FLOOR = "import hydra, torch, lightning.pytorch, torchmetrics, wandb, sklearn.datasets, os; os._exit(0)"  # no teardown: a run is stamped before its own


def first_step(repeats: int, cwd: Path) -> dict:
    """The default run (`python -m dtrain`), from the command to the end of its first optimizer
    step, and the floor (its libraries' imports alone) in turns with it."""
    runs, floors = [], []
    for i in range(repeats):
        start = time.time()
        subprocess.run([sys.executable, "-c", FLOOR], cwd=cwd, env=_env(), check=True)
        floors.append(time.time() - start)
        stamps = cwd / f"first-step-{i}.json"
        args = [f"paths.runs_dir={cwd / 'runs'}", "test=false", "+callbacks.first_step._target_=benchmarks.startup.FirstStep",
                f"+callbacks.first_step.path={stamps}"]
        start = time.time()
        done = subprocess.run([sys.executable, "-m", "dtrain", *args], cwd=cwd, env=_env(), capture_output=True, text=True)
        if done.returncode != 0 or not stamps.is_file():
            raise SystemExit(f"the default run failed:\n{done.stderr[-2000:]}")
        runs.append({name: stamp - start for name, stamp in json.loads(stamps.read_text()).items()})
    median = {name: round(statistics.median(run[name] for run in runs), 3) for name in runs[0]}
    firsts = [r["first step"] for r in runs]
    return {
        "command": "python -m dtrain", "median_s_since_command": median, "first_step_all_s": [round(s, 3) for s in firsts],
        "imports_only_floor_s": round(statistics.median(floors), 3), "floor_all_s": [round(s, 3) for s in floors],
        "first_step_over_floor_s": round(statistics.median(s - f for s, f in zip(firsts, floors)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-step-repeats", type=int, default=3)
    parser.add_argument("--skip-first-step", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dtrain-startup-") as tmp:
        cwd = Path(tmp)
        out = {"load_average": os.getloadavg(), "commands": commands(args.repeats, cwd)}
        if not args.skip_first_step:
            out["default_run"] = first_step(args.first_step_repeats, cwd)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
