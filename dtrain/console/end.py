"""What a run ends with, on rank 0: its test metrics as a table, how to upload an offline W&B run,
and the run directory."""

import logging
from pathlib import Path

log = logging.getLogger("dtrain.console")


def metrics_table(metrics: dict[str, float]) -> str:
    """Two aligned columns under a header; `<name>  <value>` rows that scripts can grep."""
    width = max([len(key) for key in metrics] + [len("metric")])
    rows = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    rows += [f"{key:<{width}}  {value:.4f}" for key, value in sorted(metrics.items())]
    return "\n".join(rows)


def end_block(metrics: dict[str, float], run_dir: Path, loggers=()) -> str:
    lines = [metrics_table(metrics)] if metrics else []
    for folder in offline_wandb_runs(loggers):
        lines.append(f"W&B run kept offline; to upload it: wandb sync {folder}")
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def offline_wandb_runs(loggers) -> list[Path]:
    from lightning.pytorch.loggers import WandbLogger

    folders = []
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)  # the run it made; never start one here
        if isinstance(logger, WandbLogger) and experiment is not None and getattr(experiment, "offline", False):
            folders.append(Path(experiment.dir).parent)
    return folders


def say_end(metrics: dict[str, float], run_dir: Path, loggers=()) -> None:
    log.info(end_block(metrics, run_dir, loggers))
