"""The dtrain side: `python -m dtrain ...` in its own process, with the case's sizes as
overrides, read back from the run directory's summary.json and metrics.csv."""

import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu.sizes import DecoderCase, ResNetCase

REPO = Path(__file__).resolve().parents[2]

# What the benchmark leaves out of a default run, and why: validation, the test stage and
# checkpoints only cost time outside the timed training windows (and device time is scarce);
# CSV is the logger the GPU machine's image can run (no wandb there); plain progress lines
# instead of Rich's live bar, since the output is a log.
COMMON = [
    "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "test=false",
    "logger=[csv]", "~callbacks.best_checkpoint", "~callbacks.last_checkpoint", "callbacks/progress=lines",
]


def trainer_overrides(device: str, steps: int, window: int) -> list[str]:
    return [
        f"trainer={'gpu' if device == 'cuda' else 'cpu'}", "trainer.precision=bf16-mixed",
        f"trainer.max_steps={steps}", "trainer.max_epochs=-1", f"trainer.log_every_n_steps={window}",
    ]


def decoder_overrides(case: DecoderCase, device: str, compile: bool) -> list[str]:
    return [
        "model=transformer", "data=generated_tokens",
        f"data.vocab_size={case.vocab_size}", f"data.block_size={case.block_size}", f"data.batch_size={case.batch_size}",
        f"data.train_samples={case.steps * case.batch_size}", f"data.num_workers={case.num_workers}",
        f"model.net.d_model={case.d_model}", f"model.net.n_layers={case.n_layers}", f"model.net.n_heads={case.n_heads}",
        "model.net.dropout=0.0", "+model.net.tie_embeddings=true",
        f"model.optimizer.lr={case.lr}", f"model.optimizer.weight_decay={case.weight_decay}", f"runtime.compile={str(compile).lower()}",
        *trainer_overrides(device, case.steps, case.window),
    ]


def resnet_overrides(case: ResNetCase, device: str, compile: bool) -> list[str]:
    return [
        "model=resnet", "data=generated_images",
        f"data.image_size={case.image_size}", f"data.num_classes={case.num_classes}", f"data.batch_size={case.batch_size}",
        f"data.train_samples={case.steps * case.batch_size}", f"data.distinct={case.distinct}", f"data.num_workers={case.num_workers}",
        "model.net._target_=benchmarks.gpu.channels_last.ChannelsLastVisionNet", f"model.net.arch={case.arch}",
        f"model.optimizer.lr={case.lr}", f"model.optimizer.weight_decay={case.weight_decay}", f"runtime.compile={str(compile).lower()}",
        "trainer.benchmark=true",  # cuDNN picks its fastest convolutions, as the hand-written loop lets it
        *trainer_overrides(device, case.steps, case.window),
    ]


def read_metrics(metrics_csv: Path, warmup: int) -> dict:
    """From the run's CSV: the last training loss, and the step time and samples/s of each
    window that starts after the first `warmup` steps (the rule the hand-written loop times by;
    dtrain's own summary takes the median of every window but the first batch)."""
    loss, windows = None, []
    with metrics_csv.open(newline="") as rows:
        for row in csv.DictReader(rows):
            if row.get("train/loss"):
                loss = float(row["train/loss"])
            if row.get("train/samples_per_sec") and int(row["step"]) >= warmup:  # `step` counts from 0: the window ends at step + 1
                windows.append((float(row["train/step_time_s"]), float(row["train/samples_per_sec"])))
    return {"last_loss": loss, "windows": windows}


def run_dtrain(overrides: list[str], run_dir: Path, log_path: Path, timeout: float, warmup: int, env: dict[str, str] | None = None) -> dict:
    """Run `python -m dtrain` with `overrides` into `run_dir`; its figures, or an error with the log's tail."""
    command = [sys.executable, "-m", "dtrain", *overrides, *COMMON, f"hydra.run.dir={run_dir}", f"paths.runs_dir={run_dir.parent}"]
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    environment.setdefault("DTRAIN_CACHE_DIR", str(run_dir.parent / "cache"))
    environment["PYTHONUNBUFFERED"] = "1"
    began = time.perf_counter()
    with log_path.open("w") as log:
        log.write(" ".join(command) + "\n\n")
        log.flush()
        try:
            done = subprocess.run(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            failure = f"exit code {done.returncode}" if done.returncode else None
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - began
    if failure:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        return {"error": f"python -m dtrain: {failure}", "log_tail": tail, "seconds": seconds}
    from dtrain.perf.summary import read_summary

    summary = read_summary(run_dir)
    metrics = read_metrics(run_dir / "metrics.csv", warmup)
    step_times, rates = zip(*metrics["windows"]) if metrics["windows"] else ((), ())
    return {
        "steps": int(summary.get("train/batches", 0)),
        "step_time_s": statistics.median(step_times) if step_times else None,
        "samples_per_sec": statistics.median(rates) if rates else None,
        "recorded_step_time_s": summary.get("train/step_time_s"),
        "recorded_samples_per_sec": summary.get("train/samples_per_sec"),
        "recorded_tokens_per_sec": summary.get("train/tokens_per_sec"),
        "data_wait_frac": summary.get("train/data_wait_frac"),
        "recorded_mfu": summary.get("train/mfu"),  # dtrain's own: FLOPs counted on the meta device
        "recorded_tflops": summary.get("train/tflops"),
        "recorded_flops_per_sample": summary.get("flops_per_sample"),
        "peak_flops_used_by_dtrain": summary.get("peak_flops"),
        "params": summary.get("params"),
        "peak_memory_gib": summary.get("memory/peak_gib"),
        "peak_reserved_gib": summary.get("memory/peak_reserved_gib"),
        "memory_kind": summary.get("memory/kind"),
        "last_loss": metrics["last_loss"],
        "timed_windows": len(rates),
        "window_spread": (max(rates) - min(rates)) / statistics.median(rates) if rates else None,
        "seconds": seconds,
    }
