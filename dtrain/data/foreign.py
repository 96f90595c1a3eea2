"""A datamodule written for plain Lightning: what dtrain takes from it, and what the run gives up.

dtrain's own datamodules (subclasses of dtrain.data.base.DataModule) shard and order the data
themselves, split the global `data.batch_size` over ranks and describe their `shapes` and
`baselines`. Any other LightningDataModule gets Lightning's DistributedSampler (or every rank
would train on the same data), keeps its own batch size per device, and lends dtrain only the
`shapes` and `baselines` it happens to have.
"""

from omegaconf import DictConfig


def is_dtrain_datamodule(datamodule) -> bool:
    from dtrain.data.base import DataModule

    return isinstance(datamodule, DataModule)


def data_shapes(datamodule) -> dict:
    """What `${shapes.<name>}` resolves to: the datamodule's `shapes`, if it has any."""
    return dict(getattr(datamodule, "shapes", None) or {})


def data_baselines(datamodule) -> dict:
    return dict(getattr(datamodule, "baselines", None) or {})


def use_distributed_sampler(trainer: DictConfig, datamodule) -> bool:
    """The Trainer's `use_distributed_sampler`: dtrain's datamodules shard themselves (the
    config's value, false); any other needs Lightning's sampler to give each rank its share."""
    if is_dtrain_datamodule(datamodule):
        return bool(trainer.get("use_distributed_sampler", False))
    return True


def foreign_data_warning(cfg: DictConfig, datamodule, left_out: list[str]) -> str | None:
    """One line saying what a run with a plain-Lightning datamodule goes without (None for a
    dtrain datamodule), and which of dtrain's default keys were left out of the user's classes."""
    dropped = f"; left out dtrain's default keys your classes do not take: {', '.join(left_out)}" if left_out else ""
    if is_dtrain_datamodule(datamodule):
        return f"dtrain: {dropped[2:]}" if dropped else None
    missing = [name for name, present in (("${shapes.*}", data_shapes(datamodule)), ("baselines", data_baselines(datamodule))) if not present]
    no_extras = f"no {' or '.join(missing)}, " if missing else ""
    return (
        f"dtrain: data={cfg.data._target_} is not a dtrain DataModule, so this run has {no_extras}"
        "each rank loads the datamodule's own batch size (data.batch_size is not a global batch split "
        "over ranks), and Lightning's DistributedSampler shards the data, so a resume is not bitwise "
        f"(README, Your own Lightning code){dropped}"
    )
