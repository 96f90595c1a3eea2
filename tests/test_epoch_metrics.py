"""A task's validation metrics are logged once, when the epoch ends, not at each validation step,
and they are the metrics of the whole validation set."""

import json

import pytest


def test_val_metrics_cover_the_whole_set_and_are_logged_at_epoch_end(train):
    _, run_dir = train("model=mlp", "trainer.max_epochs=2", "test=false", "+callbacks.probe._target_=tests.probes.ValidationProbe")
    entries = json.loads((run_dir / "validation.json").read_text())
    assert len(entries) == 2
    for entry in entries:
        assert entry["logged"] == pytest.approx(entry["whole_set"], abs=1e-6)
        assert entry["step_logs"] == 0
