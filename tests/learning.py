"""A test instrument for short runs: did training change every parameter, and did the held-out
loss fall? The loss before training is Lightning's sanity check on the validation batches the
run later validates on (LEARNING sets as many sanity steps as the smoke budget validates), so
before and after are measured on the same samples."""

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback

PROBE = "+callbacks.learning._target_=tests.learning.Learning"
LEARNING = (PROBE, "trainer.num_sanity_val_steps=2")  # budget=smoke validates on 2 batches


class Learning(Callback):
    """Writes <run>/learning.json: val/loss before training and at the last validation, the
    parameters training left exactly as they were, and how many there are."""

    def __init__(self):
        self.record: dict = {}

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self.record["before"] = float(trainer.callback_metrics["val/loss"])

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record["after"] = float(trainer.callback_metrics["val/loss"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["unchanged"] = [name for name, p in pl_module.named_parameters() if bool((p.detach() == self.start[name]).all())]
        self.record["parameters"] = len(self.start)
        (Path(trainer.default_root_dir) / "learning.json").write_text(json.dumps(self.record))


def learned(run_dir: Path, fall: float | None = 0.005) -> dict:
    """Assert the run trained every parameter and (unless `fall` is None) lowered its held-out
    loss by at least that fraction of its value before training; return the record."""
    record = json.loads((Path(run_dir) / "learning.json").read_text())
    assert record["parameters"] > 0 and not record["unchanged"], f"training left these as they were: {record['unchanged']}"
    if fall is not None:
        assert record["after"] <= (1 - fall) * record["before"], f"held-out loss {record['before']:.4f} -> {record['after']:.4f}"
    return record
