"""What a run prints, as a user meets it with stdout not a terminal: each message once, none of
the libraries' noise, a start block, plain progress lines (no bar redraws), the end table and the
run directory; only rank 0 speaks under ddp, and <run>/run.log keeps every message."""

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_env

NOISE = ("litlogger", "LeafSpec", "anonymous setting", "GPU available", "The `srun` command", "wandb: ")
START_FIELDS = ("dtrain run  ", "  model    ", "  data     ", "  trainer  ", "  metrics  ")


def quiet_wandb_env(tmp_path: Path) -> dict:
    env = child_env(DTRAIN_RUNS_DIR=str(tmp_path / "runs"), WANDB_MODE="offline")
    env.pop("WANDB_SILENT", None)
    return env


def smoke_run(tmp_path: Path, *overrides: str) -> tuple[str, Path]:
    """`python -m dtrain budget=smoke` with W&B left to speak (the test session silences it)."""
    done = subprocess.run([sys.executable, "-m", "dtrain", "budget=smoke", *overrides], cwd=tmp_path, env=quiet_wandb_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run_dir = Path(re.search(r"^run directory: (.+)$", done.stdout, re.M).group(1))
    return done, run_dir


@pytest.mark.parametrize("trainer", ["cpu", "ddp"])
def test_a_run_prints_each_line_once_and_only_what_a_user_needs(tmp_path, trainer):
    done, run_dir = smoke_run(tmp_path, f"trainer={trainer}")
    printed = done.stdout + done.stderr
    lines = [line for line in printed.splitlines() if line.strip()]
    repeated = [line for line, count in collections.Counter(lines).items() if count > 1]
    assert not repeated, repeated
    assert not [word for word in NOISE if word in printed], printed
    assert "\r" not in printed  # no bar redraws when stdout is not a terminal

    for field in START_FIELDS:
        assert sum(line.startswith(field) for line in lines) == 1, field
    block = "\n".join(line for line in lines if line.startswith(START_FIELDS))
    assert f"dtrain run  {run_dir}" in block
    assert "Classification, net ConvNet, 74.8 K parameters" in block
    assert "DigitsDataModule: train 1,257, val 180, test 360; batch 64" in block
    assert ("ddp, 2 cpu devices" if trainer == "ddp" else "single device, 1 cpu device") + ", precision 32-true" in block
    assert "CSV metrics.csv; W&B offline wandb/offline-run-" in block
    assert "Name | Type" not in printed and "Trainable params" not in printed  # the block replaces the summary

    assert re.search(r"^Epoch 0  done at step 3  train/loss \d", printed, re.M)  # a plain progress line
    table = printed[printed.index("\nmetric "):]
    assert re.search(r"^test/acc\s+[0-9.]+$", table, re.M) and re.search(r"^test/loss\s+[0-9.]+$", table, re.M)
    assert f"wandb sync {run_dir}/wandb/offline-run-" in table
    assert done.stdout.splitlines()[-1] == f"run directory: {run_dir}"

    log = (run_dir / "run.log").read_text()  # keeps what the console leaves out, of every rank
    for message in ("GPU available: False", "litlogger", "Trainable params", "`Trainer.fit` stopped: `max_steps=3` reached",
                    "dtrain run  ", "wandb sync", "test/acc"):
        assert message in log, message
    if trainer == "ddp":
        # rank 1 runs without Hydra (python -m dtrain.launch.rank): run() applied the same logging there
        assert "[rank 1][lightning.fabric.utilities.distributed][INFO] - Initializing distributed: GLOBAL_RANK: 1" in log


def test_progress_is_plain_lines_outside_a_terminal_and_a_bar_inside(monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

    from dtrain.config.errors import ConfigError
    from dtrain.console.progress import StepLines, StepLinesBar, progress

    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress("rich"), RichProgressBar) and isinstance(progress("tqdm"), TQDMProgressBar)
    assert isinstance(progress("lines"), StepLinesBar)
    # trainer.enable_progress_bar=false: lines, and no ProgressBar (Lightning refuses one beside the flag)
    off = progress("rich", enabled=False)
    assert isinstance(off, StepLines) and not isinstance(off, ProgressBar)
    for launcher in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.setenv(launcher, "7")
        assert isinstance(progress("rich"), StepLinesBar), launcher
        monkeypatch.delenv(launcher)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress("tqdm"), StepLinesBar)
    with pytest.raises(ConfigError, match="callbacks.progress.bar"):
        progress("fancy")



def test_the_console_filter_hides_noise_and_repeats_and_other_ranks(monkeypatch):
    import logging

    from dtrain.console import logs

    def shown(console, name, message, level=logging.INFO):
        return console.filter(logging.LogRecord(name, level, __file__, 1, message, None, None))

    console = logs.ConsoleFilter()
    monkeypatch.setattr(logs, "rank", lambda: 0)
    assert shown(console, "lightning.pytorch.utilities.rank_zero", "`Trainer.fit` stopped: `max_steps=3` reached.")
    assert not shown(console, "lightning.pytorch.utilities.rank_zero", "`Trainer.fit` stopped: `max_steps=3` reached.")
    assert not shown(console, "lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging, try litlogger")
    assert not shown(console, "py.warnings", "x.py:1: Checkpoint directory /r/checkpoints exists and is not empty.\n", logging.WARNING)
    assert not shown(console, "lightning.pytorch.callbacks.model_summary", "  | Name | Type")
    assert shown(console, "dtrain.train", "dtrain: data=my.DataModule is not a dtrain DataModule", logging.WARNING)
    monkeypatch.setattr(logs, "rank", lambda: 1)  # another rank: errors only
    assert not shown(console, "dtrain.train", "a warning only rank 1 has", logging.WARNING)
    assert shown(console, "dtrain.train", "rank 1 failed", logging.ERROR)


def test_a_terminal_bar_redraws_a_few_times_a_second_and_at_each_stage_end(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    from dtrain.console.progress import throttled

    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    monkeypatch.setattr(RichProgressBar, "total_train_batches", property(lambda self: 100))
    bar = throttled(RichProgressBar)()
    for batch_idx in range(100):  # far faster than the interval: the first batch and the last
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert drawn == [0, 99]
    bar._drawn -= bar.interval  # the interval passed: the next batch is drawn
    bar.on_train_batch_end(None, None, None, None, 5)
    assert drawn[-1] == 5
