"""Train each architecture family on its default task for the same budget and read back its cost."""

import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dtrain.reporting.runs import convergence, load_run


@dataclass
class FamilyRow:
    family: str
    run_dir: str
    metric: str = ""
    params: float = math.nan
    params_source: str = ""
    flops_per_sample: float = math.nan
    samples_per_sec: float = math.nan
    peak_memory_gib: float = math.nan
    mfu: float = math.nan
    steps: float = math.nan
    train_seconds: float = math.nan  # training time by metrics.csv (no validation)
    run_seconds: float = math.nan  # the whole run: data, fit with validation, test
    steps_to_95: float = math.nan
    seconds_to_95: float = math.nan
    best: float = math.nan
    final: float = math.nan
    test: float = math.nan
    convergence_source: str = ""
    error: str = ""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def family_overrides(spec, family: str) -> list[str]:
    """The overrides that give `family` the comparison's budget on its own default task."""
    budget = [
        f"model={family}",
        "trainer.max_epochs=-1", f"trainer.max_steps={spec.budget}",
        f"trainer.val_check_interval={spec.val_every}", "trainer.check_val_every_n_epoch=null",
        f"trainer.limit_val_batches={spec.limit_val_batches}", f"trainer.limit_test_batches={spec.limit_test_batches}",
        f"trainer.log_every_n_steps={spec.log_every}",
    ]
    return budget + list(spec.overrides) + list(spec.family_overrides.get(family, []))


def steps_for_batches(cfg, batches: int) -> int:
    """Lightning's max_steps that trains `batches` batches: a GAN task steps its critic on every
    batch and its generator on every `critic_steps`-th, and Lightning counts both."""
    critic_steps = cfg.model.get("critic_steps")
    return batches + batches // int(critic_steps) if critic_steps else batches


def train_in_child(cfg, log_file: str, answer) -> None:
    """run(cfg) in a fresh process (so its peak memory, threads and RNG are its own), with its
    output in `log_file`; sends back the test metrics and the run's wall time, or the error."""
    with open(log_file, "w") as log:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(log.fileno(), 1)  # Lightning's and the C++ libraries' messages too, not only Python's
        os.dup2(log.fileno(), 2)
        from dtrain.train import run

        start = time.perf_counter()
        try:
            answer.send({"metrics": run(cfg), "seconds": time.perf_counter() - start})
        except Exception as error:
            traceback.print_exc()
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            answer.send({"error": f"{type(error).__name__}: {message}"})


def train_one(cfg, log_file: Path) -> dict:
    """train_in_child in a spawned process that never outlives this call (nor a SIGTERM to it)."""
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=train_in_child, args=(cfg, str(log_file), send), name="dtrain-compare-run")
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the child
    try:
        child.start()
        send.close()
        try:
            return receive.recv()
        except EOFError:  # the child died without answering (killed, out of memory)
            child.join()
            return {"error": f"the training process ended with exit code {child.exitcode}"}
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        signal.signal(signal.SIGTERM, previous)


def train_families(spec, compare_dir: Path, cfgs: dict, announce=print) -> list[FamilyRow]:
    """Each family's composed config trained in turn, each in its own process and run directory."""
    rows = []
    for family, cfg in cfgs.items():
        run_dir = Path(cfg.paths.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        result = train_one(cfg, run_dir / "train.log")
        row = read_family(family, run_dir, spec.metrics.get(family, "val/loss"), result)
        announce(f"{family}: {'failed: ' + row.error if row.error else f'{row.run_seconds:.0f} s'} ({run_dir})")
        rows.append(row)
    return rows


def read_family(family: str, run_dir: Path, metric: str, result: dict) -> FamilyRow:
    """One table row from a family's run directory: summary.json first, metrics.csv for what it
    lacks (runs from before the summary existed), the checkpoint for the parameter count."""
    row = FamilyRow(family=family, run_dir=str(run_dir), metric=metric, error=result.get("error", ""))
    if not (run_dir / "metrics.csv").is_file():
        row.error = row.error or "no metrics.csv"
        return row
    run = load_run(run_dir, family)
    summary, df = run.summary, run.metrics
    row.params, row.params_source = _params(run_dir, summary)
    row.flops_per_sample = summary.get("flops_per_sample", math.nan)
    row.samples_per_sec = summary.get("train/samples_per_sec", _median(df, "train/samples_per_sec"))
    row.peak_memory_gib = summary.get("memory/peak_gib", _max(df, "memory/peak_gib"))
    row.mfu = summary.get("train/mfu", _median(df, "train/mfu"))
    row.steps = float(df["step"].max())
    row.train_seconds = float(run.series("train/loss")["seconds"].max())
    row.run_seconds = result.get("seconds", math.nan)
    found = convergence(run, metric)
    if found:
        row.steps_to_95, row.seconds_to_95 = found.steps_to_95, found.seconds_to_95
        row.best, row.final, row.convergence_source = found.best, found.final, found.source
    row.test = result.get("metrics", {}).get("test/" + metric.split("/", 1)[-1], math.nan)
    return row


def _median(df, name: str) -> float:
    return float(np.nanmedian(df[name])) if name in df and df[name].notna().any() else math.nan


def _max(df, name: str) -> float:
    return float(np.nanmax(df[name])) if name in df and df[name].notna().any() else math.nan


def _params(run_dir: Path, summary: dict) -> tuple[float, str]:
    if "params" in summary:
        return float(summary["params"]), "summary.json"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        return math.nan, ""
    from dtrain.checkpoints import UnsafeCheckpoint, load_checkpoint

    try:
        state = load_checkpoint(checkpoint, mmap=True)["state_dict"]
    except UnsafeCheckpoint as unsafe:  # never opened fully: the count is left out
        print(f"dtrain: parameter count of {run_dir} left out: {unsafe}", file=sys.stderr)
        return math.nan, ""
    # Floating-point tensors of the state dict, less batch-norm statistics: the parameters.
    count = sum(t.numel() for name, t in state.items() if t.is_floating_point() and not name.endswith(("running_mean", "running_var")))
    return float(count), "checkpoint"
