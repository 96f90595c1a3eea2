"""The sanity check's two batches of 32 digits lack a class: its metrics are still there for
callbacks at its end, without torchmetrics' warnings about the missing class in the run."""

import json
import warnings

from dtrain.config.compose import compose
from dtrain.train import run


def test_sanity_check_values_without_torchmetrics_warnings(tmp_path):
    cfg = compose([
        "model=cnn", "data.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=[csv]",
        "test=false", "trainer.enable_progress_bar=false", "+callbacks.probe._target_=tests.probes.SanityCheckValues",
    ], run_dir=tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg)
    values = json.loads((tmp_path / "run" / "sanity_check.json").read_text())
    assert {"val/loss", "val/acc", "val/auroc", "val/f1"} <= set(values)
    assert 0 < values["val/loss"] < 10 and 0 <= values["val/acc"] <= 1
    assert not [w for w in caught if "No positive samples" in str(w.message)]
