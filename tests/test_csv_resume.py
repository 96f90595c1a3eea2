"""A run SIGKILLed mid-epoch after its metrics.csv got rows past the last checkpoint, then
resumed: metrics.csv records every (step, metric) once, the same rows as an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO, child_env

# 5 steps an epoch, 15 in all, a checkpoint every 4 (12: mid-epoch); every row reaches the file
# at once. The kill comes before step 14: the rows of steps 12 and 13 came after the checkpoint.
RUN = ["model=mlp", "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=4", "trainer.log_every_n_steps=1",
       "logger=[csv]", "+logger.csv.flush_logs_every_n_steps=1", "trainer.enable_progress_bar=false", "seed=3"]
# What depends on the machine's speed, not on the training.
TIMING = ("train/samples_per_sec", "train/step_time_s", "train/data_wait_frac", "train/tflops", "train/mfu", "memory/peak_gib")


class KillAtStep(Callback):
    """Test instrument: SIGKILLs this process before the training step `step`, once (`once` is
    the file it leaves; the resumed run keeps the run's callbacks and finds it)."""

    def __init__(self, step: int, once: str):
        self.step, self.once = step, Path(once)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step and not self.once.exists():
            self.once.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def start(*args: str, run_dir: Path | None = None) -> subprocess.Popen:
    env = child_env(**({"DTRAIN_RUN_DIR": str(run_dir)} if run_dir else {}))
    return subprocess.Popen([sys.executable, "-m", "dtrain", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def cells(run_dir: Path) -> list[tuple[str, str, str]]:
    """(step, column, value) of every filled cell of metrics.csv, in file order."""
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [(row["step"], column, value) for row in rows for column, value in row.items() if value and column != "step"]


def test_resumed_run_records_each_step_once(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = start(*RUN, run_dir=reference_dir)
    killed = start(*RUN, f"+callbacks.kill._target_={__name__}.KillAtStep", "+callbacks.kill.step=14",
                   f"+callbacks.kill.once={tmp_path / 'kill-once'}", run_dir=killed_dir)
    assert killed.wait(timeout=300) == -signal.SIGKILL, killed.stderr.read()[-3000:]
    before = cells(killed_dir)
    assert max(int(step) for step, _, _ in before) == 13, "rows past the checkpoint at step 12 must be on disk"
    resumed = start(f"resume={killed_dir}")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    expected, actual = cells(reference_dir), cells(killed_dir)
    twice = [key for key, n in Counter((step, column) for step, column, _ in actual if column != "epoch").items() if n > 1]
    assert not twice, f"recorded twice: {twice[:5]}"
    assert sorted(cell for cell in actual if cell[1] not in TIMING) == sorted(cell for cell in expected if cell[1] not in TIMING)
    # Throughput needs a step to warm up in each process: the resumed run's first step has none.
    assert {(s, c) for s, c, _ in actual if c in TIMING} <= {(s, c) for s, c, _ in expected if c in TIMING}
    assert before[:10] == actual[:10], "the rows before the checkpoint stay as they were"
