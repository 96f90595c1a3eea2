"""The run's summary: one flat JSON object in <run>/summary.json and the W&B run summary."""

import json
import math
import os
from pathlib import Path

SUMMARY_FILE = "summary.json"


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_summary(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_summary(trainer, values: dict) -> None:
    """Merge `values` into the run's summary (rank 0 only): summary.json in the run directory
    (a resumed run updates the file of the run before it) and every W&B logger's run summary."""
    if not trainer.is_global_zero or not values:
        return
    values = {key: _plain(value) for key, value in values.items()}
    run_dir = Path(trainer.default_root_dir)
    merged = {**read_summary(run_dir), **values}
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{SUMMARY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True))
    tmp.replace(run_dir / SUMMARY_FILE)

    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(values)
