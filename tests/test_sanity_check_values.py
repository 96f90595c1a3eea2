"""The sanity check's two batches of 32 digits lack a class: its metrics are still there for
callbacks at its end, without torchmetrics' warnings about the missing class in the run."""

import json
import warnings


def test_sanity_check_values_without_torchmetrics_warnings(train):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run_dir = train(
            "model=cnn", "data.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false",
            "+callbacks.probe._target_=tests.probes.SanityCheckValues",
        )
    values = json.loads((run_dir / "sanity_check.json").read_text())
    assert {"val/loss", "val/acc", "val/auroc", "val/f1"} <= set(values)
    assert 0 < values["val/loss"] < 10 and 0 <= values["val/acc"] <= 1
    assert not [w for w in caught if "No positive samples" in str(w.message)]
