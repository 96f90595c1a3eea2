"""A dead rank never hangs the others (issue 11, item 2; ddp started by dtrain): SIGKILL of rank 1
or of rank 0 mid-run ends the run in one line of dtrain's naming the dead rank and the last good
checkpoint, and resuming finishes it."""

import pytest

from tests.conftest import dtrain_cli

RUN = ("model=mlp", "trainer=ddp", "logger=[csv]", "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=4",
       "test=false", "~callbacks.records", "+callbacks.die._target_=tests.probes.DieAt", "+callbacks.die.step=10")


@pytest.mark.slow
@pytest.mark.parametrize("dead", [1, 0])
def test_a_killed_rank_ends_the_run_in_one_line_and_resume_finishes_it(tmp_path, dead, fault_record):
    run = tmp_path / "run"
    done = dtrain_cli(*RUN, f"+callbacks.die.rank={dead}", f"hydra.run.dir={run}", cwd=tmp_path, timeout=240)
    said = [line for line in done.stderr.splitlines() if line.startswith("dtrain: error: ")]
    assert done.returncode != 0 and len(said) == 1, done.stderr[-3000:]
    assert f"rank {dead} (pid " in said[0] and "died" in said[0], said[0]
    assert f"last good checkpoint is {run}/checkpoints/" in said[0] and f"resume={run}" in said[0], said[0]
    if dead == 1:  # rank 0 speaks for the run; with rank 0 gone, the survivor does, and no traceback from it
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    resumed = dtrain_cli(f"resume={run}", cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    fault_record("rank_killed", "ddp", survived=True, nothing_lost=True, message=True)


@pytest.mark.slow
def test_a_hung_rank_ends_the_run_within_the_collective_timeout(tmp_path, fault_record):
    """Rank 1 stops answering at step 5 (after epoch 1's checkpoint); rank 0 waits in the step's
    all-reduce for runtime.collective_timeout_s, then the run ends in one line naming the setting."""
    import time

    run = tmp_path / "run"
    hang = ("+callbacks.hang._target_=tests.probes.HangAt", "+callbacks.hang.step=5", "runtime.collective_timeout_s=10")
    started = time.monotonic()
    done = dtrain_cli("model=mlp", "trainer=ddp", "logger=[csv]", "trainer.max_epochs=2", "test=false", "~callbacks.records", *hang,
                      f"hydra.run.dir={run}", cwd=tmp_path, timeout=240)
    assert time.monotonic() - started < 120, "the hung rank was waited for much longer than the timeout"
    said = [line for line in done.stderr.splitlines() if line.startswith("dtrain: error: ")]
    assert done.returncode == 2 and len(said) == 1, done.stderr[-3000:]
    assert said[0].startswith("dtrain: error: runtime.collective_timeout_s: a rank stopped answering: a collective waited 10 s"), said[0]
    assert f"the last good checkpoint is {run}/checkpoints/last.ckpt" in said[0] and f"resume={run}" in said[0], said[0]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    resumed = dtrain_cli(f"resume={run}", "runtime.collective_timeout_s=600", cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    fault_record("rank_hangs", "ddp", survived=True, nothing_lost=True, message=True)
