"""A run killed with SIGKILL mid-epoch and resumed ends with exactly the weights of an
uninterrupted run; resume keeps the run's directory, config and W&B id."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dtrain.checkpoints import newest_valid_checkpoint
from tests.conftest import REPO, child_env, dtrain_cli

# Dropout, batch norm, AdamW and a shuffled loader: everything that makes plain Lightning resume
# differ. 78 steps per epoch; a checkpoint every 10 steps.
RUN = [
    "model=cnn", "data.batch_size=16", "trainer.max_epochs=3", "seed=7",
    "callbacks.last_checkpoint.every_n_train_steps=10", "trainer.enable_progress_bar=false",
]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def global_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except Exception:  # being written right now
        return -1


def start(run_dir: Path) -> subprocess.Popen:
    env = child_env(DTRAIN_RUN_DIR=str(run_dir), WANDB_MODE="offline")
    # Its own session, so the kill takes the whole process tree (W&B's service too), as a
    # preemption or an OOM kill of a job's cgroup would.
    return subprocess.Popen([sys.executable, "-m", "dtrain", *RUN], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sigkill_mid_epoch_then_resume_gives_bitwise_equal_weights(tmp_path, fault_record):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = start(reference_dir)
    killed = start(killed_dir)

    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not (last.exists() and global_step(last) >= 100):  # epoch 1, batch 22 of 78
        assert killed.poll() is None, killed.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint past step 100"
        time.sleep(0.2)
    assert killed.poll() is None, "the run finished before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    steps_done = global_step(newest_valid_checkpoint(killed_dir))
    assert 100 <= steps_done < 3 * 78 and steps_done % 78, "the resume must start mid-epoch"

    resumed = subprocess.run(
        [sys.executable, "-m", "dtrain", f"resume={killed_dir}"], cwd=REPO, env=child_env(WANDB_MODE="offline"),
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run directory: {killed_dir.resolve()}" in resumed.stdout

    expected, actual = final_weights(reference_dir), final_weights(killed_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"

    # The same W&B run continues: both offline runs of the killed directory carry one id.
    wandb_runs = sorted((killed_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2
    assert len({run.name.rsplit("-", 1)[1] for run in wandb_runs}) == 1
    fault_record("sigkill_mid_epoch", "cpu", survived=True, nothing_lost=True, message=None)  # a SIGKILL leaves no word


def test_resume_refuses_overrides_that_change_the_run(tmp_path):
    run_dir = tmp_path / "run"
    done = dtrain_cli(*RUN[:2], "trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=[csv]", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(run_dir)})
    assert done.returncode == 0, done.stderr[-2000:]
    before = (run_dir / "config.yaml").read_text()

    refused = dtrain_cli(f"resume={run_dir}", "model.optimizer.lr=0.5", cwd=tmp_path)
    assert refused.returncode == 2
    assert "model.optimizer.lr" in refused.stderr and "Traceback" not in refused.stderr
    assert (run_dir / "config.yaml").read_text() == before

    more = dtrain_cli(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == 6
    epochs = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert "0" in epochs and "1" in epochs, "metrics.csv must keep the rows from before the resume"


def test_a_run_killed_after_an_epoch_resumes_from_that_epochs_end(tmp_path, fault_record):
    """last.ckpt is written at every epoch's end (Lightning 2.6 alone writes a last-only
    callback's file when training ends, so a killed run fell back to its best epoch)."""
    run = ("model=mlp", "logger=[csv]", "trainer.max_epochs=4", "test=false", "~callbacks.records", "trainer.enable_progress_bar=false")
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    died = dtrain_cli(*run, "+callbacks.die._target_=tests.probes.DieAt", "+callbacks.die.rank=0", "+callbacks.die.step=12",
                      f"hydra.run.dir={killed}", cwd=tmp_path, timeout=240)
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert newest_valid_checkpoint(killed) == last and global_step(last) == 10  # 5 steps an epoch: the end of epoch 2

    assert dtrain_cli(f"resume={killed}", cwd=tmp_path, timeout=240).returncode == 0
    assert dtrain_cli(*run, f"hydra.run.dir={reference}", cwd=tmp_path, timeout=240).returncode == 0
    expected, actual = final_weights(reference), final_weights(killed)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    assert global_step(last) == 20
    fault_record("sigkill_after_epoch", "cpu", survived=True, nothing_lost=True, message=None)
