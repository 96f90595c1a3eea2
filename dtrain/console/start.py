"""The block a run starts with, on rank 0: run directory, model, data, trainer, where metrics go."""

import logging
import re
from pathlib import Path

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("dtrain.console")

SPLITS = ("train", "val", "test")
# Where a datamodule keeps a split: dtrain's `train_set`, or names like `data_train`, `mnist_val`.
_SPLIT_NAME = re.compile(r"(?:^|_)(train|val|valid|validation|test)(?:_|$)")


class StartBlock(Callback):
    """Says what the run is once Lightning has set up the data (the split sizes are known) and
    before the strategy wraps or shards the model (the parameter count is the whole model's)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            log.info(start_block(trainer, pl_module))


def start_block(trainer, pl_module) -> str:
    run_dir = Path(trainer.default_root_dir).resolve()
    lines = [
        f"dtrain run  {run_dir}",
        f"  model    {describe_model(pl_module)}",
        f"  data     {describe_data(trainer.datamodule)}",
        f"  trainer  {describe_trainer(trainer)}",
        f"  metrics  {describe_loggers(trainer.loggers, run_dir)}",
    ]
    return "\n".join(lines)


def describe_model(pl_module) -> str:
    from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

    net = getattr(pl_module, "net", None)
    name = type(pl_module).__name__ + (f", net {type(net).__name__}" if net is not None else "")
    params = sum(getattr(p, "ds_numel", p.numel()) for p in pl_module.parameters())
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in pl_module.parameters() if p.requires_grad)
    frozen = f" ({get_human_readable_count(params - trainable)} frozen)" if trainable != params else ""
    return f"{name}, {get_human_readable_count(params)} parameters{frozen}"


def split_sizes(datamodule) -> dict[str, int]:
    """The number of samples in each split the datamodule holds (those it does not say are left out)."""
    sizes: dict[str, int] = {}
    for name, value in vars(datamodule).items():
        match = _SPLIT_NAME.search(name)
        if match is None or value is None or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
            continue
        split = {"valid": "val", "validation": "val"}.get(match.group(1), match.group(1))
        sizes.setdefault(split, len(value))
    return {split: sizes[split] for split in SPLITS if split in sizes}


def describe_data(datamodule) -> str:
    if datamodule is None:
        return "dataloaders given to fit"
    sizes = split_sizes(datamodule)
    splits = ", ".join(f"{split} {size:,}" for split, size in sizes.items()) if sizes else "split sizes not known"
    batch = getattr(datamodule, "batch_size", None)
    return f"{type(datamodule).__name__}: {splits}" + (f"; batch {batch}" if batch is not None else "")


def describe_trainer(trainer) -> str:
    strategy = trainer.strategy
    name = getattr(strategy, "strategy_name", None) or re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(strategy).__name__.removesuffix("Strategy")).lower()
    stage = getattr(strategy, "config", None) and strategy.config.get("zero_optimization", {}).get("stage")
    if stage is not None:
        name += f" zero{stage}"
    accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    nodes = f"{trainer.num_nodes} nodes x " if trainer.num_nodes > 1 else ""
    devices = f"{nodes}{trainer.num_devices} {accelerator} device{'s' if trainer.num_devices * trainer.num_nodes > 1 else ''}"
    return f"{name.replace('_', ' ')}, {devices}, precision {trainer.precision}"


def describe_loggers(loggers, run_dir: Path) -> str:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    places = []
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            places.append(f"CSV {_short(Path(logger.log_dir) / 'metrics.csv', run_dir)}")
        elif isinstance(logger, WandbLogger):
            experiment = logger.experiment
            if getattr(experiment, "offline", False):
                places.append(f"W&B offline {_short(Path(experiment.dir).parent, run_dir)}")
            else:
                places.append(f"W&B online {experiment.url}")
        elif isinstance(logger, TensorBoardLogger):
            places.append(f"TensorBoard {_short(logger.log_dir, run_dir)}")
        else:
            places.append(type(logger).__name__)
    return "; ".join(places) or "no logger"


def _short(path, run_dir: Path) -> str:
    """A path inside the run directory, relative to it (the block's first line names it)."""
    path = Path(path).resolve()
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
