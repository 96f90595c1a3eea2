"""The W&B group of a run: the runs of one Hydra multirun share one, named after its sweep directory."""

from pathlib import Path

from omegaconf import DictConfig, open_dict

GROUP_LIMIT = 128  # W&B refuses longer group names


def pin_wandb_group(cfg: DictConfig) -> None:
    """Inside a Hydra multirun, set `logger.wandb.group` (when null) to the multirun's sweep
    directory (relative to `paths.runs_dir`), so its jobs are grouped in W&B and a resumed job
    keeps its group (config.yaml holds the value, not an interpolation). A Ray Tune sweep sets
    the group itself."""
    wandb = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if wandb is None or wandb.get("group") is not None:
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    sweep_dir = Path(str(HydraConfig.get().sweep.dir)).resolve()
    runs_dir = Path(str(cfg.paths.runs_dir)).resolve()
    name = sweep_dir.relative_to(runs_dir) if sweep_dir.is_relative_to(runs_dir) else sweep_dir
    with open_dict(cfg):
        cfg.logger.wandb.group = str(name)[-GROUP_LIMIT:]  # e.g. multirun/2026-12-01/20-05-23-637549
