"""A run's directory: its saved config, stable id and reproducibility record."""

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_FILE = "config.yaml"  # the config this run used, with its directory and id fixed
ENV_FILE = "env.json"


def run_id_for(run_dir: Path) -> str:
    """Derived from the directory, so every rank on every node agrees without talking."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]


def fix_run_dir(cfg: DictConfig) -> Path:
    """Pin `paths.run_dir` (Hydra's output dir, or the resumed run's), `run_id` and, in a Hydra
    multirun, the W&B group in `cfg`."""
    run_dir = Path(cfg.resume if cfg.get("resume") else cfg.paths.run_dir).resolve()
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
        if not cfg.get("run_id"):
            cfg.run_id = run_id_for(run_dir)
    from dtrain.loggers.wandb_group import pin_wandb_group

    pin_wandb_group(cfg)  # pinned like the id, so a resumed multirun job keeps its W&B group
    return run_dir


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(OmegaConf.to_yaml(cfg))
    tmp.replace(run_dir / CONFIG_FILE)


def load_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(run_dir / CONFIG_FILE)


def write_env_record(run_dir: Path, trainer) -> dict:
    """The reproducibility record (dtrain.env_record): written to env.json and given to every
    W&B logger as its run's config key `env`. Returns it."""
    from dtrain.env_record import env_record

    record = env_record(trainer)
    tmp = run_dir / f".{ENV_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / ENV_FILE)

    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update({"env": record}, allow_val_change=True)
    return record
