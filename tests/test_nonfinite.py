"""A NaN loss, injected for real (a batch of NaN inputs): the run stops on the step it happened,
names it and the last good checkpoint, and writes no checkpoint after it; with
runtime.skip_nonfinite=true such steps are skipped, leave the weights as they were, and are
counted."""

import json

import pytest
import torch

from dtrain.perf.summary import read_summary
from tests.conftest import dtrain_cli

# model=mlp trains 5 batches an epoch and saves a checkpoint at each epoch's validation (steps 5, 10, ...).
RUN = ["model=mlp", "trainer.max_epochs=4", "logger=[csv]", "trainer.enable_progress_bar=false", "+callbacks.poison._target_=tests.probes.PoisonBatches"]


def checkpoint_steps(run_dir) -> list[int]:
    return sorted(torch.load(p, map_location="cpu", weights_only=True)["global_step"] for p in (run_dir / "checkpoints").glob("*.ckpt"))


def test_a_nan_loss_stops_the_run_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, fault_record):
    run_dir = tmp_path / "run"
    done = dtrain_cli(*RUN, "+callbacks.poison.steps=[12]", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(run_dir)})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith("dtrain: error: runtime.skip_nonfinite: the loss (or its gradients) became NaN or inf at step 12;"), lines[-1]
    assert "last good checkpoint is" in lines[-1] and "runtime.skip_nonfinite=true" in lines[-1]
    assert max(checkpoint_steps(run_dir)) == 10  # the epoch before; nothing of the poisoned weights
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(value).all() for value in state.values())
    fault_record("nan_loss", "cpu", survived=None, nothing_lost=True, message=True)  # it stops, by design


def test_skip_nonfinite_skips_such_steps_and_counts_them(tmp_path):
    run_dir = tmp_path / "run"
    done = dtrain_cli(*RUN, "+callbacks.poison.steps=[12,13]", "runtime.skip_nonfinite=true", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(run_dir)})
    assert done.returncode == 0, done.stderr[-3000:]
    sums = json.loads((run_dir / "poison.json").read_text())
    assert sums["12"] == sums["13"] == sums["14"]  # the two poisoned steps changed no weight
    assert read_summary(run_dir)["train/nonfinite_skipped"] == 2
    assert max(checkpoint_steps(run_dir)) == 20
    assert "test/acc" in done.stdout + done.stderr or (run_dir / "lightning_logs").exists()


@pytest.mark.faults  # not in .ci/run (issue 11's CI allowance): bash scripts/test.sh -m faults tests/test_nonfinite.py
def test_under_ddp_every_rank_stops_and_one_line_is_printed(tmp_path, fault_record):
    """An exception inside Lightning's loop in one of two processes leaves the other waiting in
    its teardown: the ranks agree on the bad step and stop together, and rank 0 alone speaks."""
    run_dir = tmp_path / "run"
    done = dtrain_cli(*RUN, "trainer=ddp", "trainer.max_epochs=8", "+callbacks.poison.steps=[7]", cwd=tmp_path,
                      env={"DTRAIN_RUN_DIR": str(run_dir)}, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("dtrain: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and "at step 7;" in errors[0], errors
    assert max(checkpoint_steps(run_dir)) == 5
    fault_record("nan_loss", "ddp", survived=None, nothing_lost=True, message=True)
