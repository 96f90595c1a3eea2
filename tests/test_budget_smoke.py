"""`budget=smoke`: a few steps, one validation at their end, then the test; nothing printed that a
user cannot act on (Lightning's "could not find the monitored key" when the best checkpoint
monitors a val/loss no validation produced)."""

import csv
import logging

import pytest

MISSING_MONITOR = "could not find the monitored key"


@pytest.fixture
def said(recwarn, caplog):
    """said() -> every warning and log message of the run (under pytest a run leaves logging and
    warnings to pytest, so no run.log)."""
    from lightning.pytorch.callbacks import model_checkpoint

    model_checkpoint.warning_cache.clear()  # Lightning warns once per process: forget earlier runs here
    caplog.set_level(logging.INFO)
    return lambda: "\n".join([str(w.message) for w in recwarn] + [r.getMessage() for r in caplog.records])


def validations(run_dir) -> list[int]:
    """The steps at which the run logged val/loss (metrics.csv's step is the step count minus one)."""
    return [int(row["step"]) + 1 for row in csv.DictReader((run_dir / "metrics.csv").open()) if row.get("val/loss")]


@pytest.mark.parametrize("steps", [None, 5], ids=["3-steps", "max_steps=5"])
def test_smoke_validates_once_at_its_last_step_and_tests_that_checkpoint(train, said, steps):
    more = [f"trainer.max_steps={steps}"] if steps else []
    metrics, run_dir = train("model=mlp", "budget=smoke", *more)
    last = steps or 3
    assert validations(run_dir) == [last]
    assert [p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt")] == [f"best-epoch000-step{last:07d}.ckpt"]
    log = said()
    assert MISSING_MONITOR not in log
    assert f"Restoring states from the checkpoint path at {run_dir}/checkpoints/best-" in log  # the test used it
    assert "test/acc" in metrics


def test_smoke_of_a_graph_with_one_batch_an_epoch_trains_three_steps_and_validates(train, said):
    metrics, run_dir = train("model=gcn", "data.steps_per_epoch=1", "budget=smoke")
    assert validations(run_dir) == [3]
    assert MISSING_MONITOR not in said()


def test_smoke_of_a_gan_warns_of_nothing(train, said):
    # two optimizers step each batch: max_steps stops it before the validation, and with it the
    # best checkpoint, which saves after validations only
    metrics, run_dir = train("model=dcgan", "budget=smoke")
    assert MISSING_MONITOR not in said()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and "test/loss" in metrics
