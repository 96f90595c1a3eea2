"""A run's directory: its saved config, stable id and reproducibility record."""

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_FILE = "config.yaml"  # the config this run used, with its directory and id fixed
ENV_FILE = "env.json"


def run_id_for(run_dir: Path) -> str:
    """Derived from the directory, so every rank on every node agrees without talking."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]


def fix_run_dir(cfg: DictConfig) -> Path:
    """Pin `paths.run_dir` (Hydra's output dir, or the resumed run's) and `run_id` in `cfg`."""
    run_dir = Path(cfg.resume if cfg.get("resume") else cfg.paths.run_dir).resolve()
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
        if not cfg.get("run_id"):
            cfg.run_id = run_id_for(run_dir)
    return run_dir


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(OmegaConf.to_yaml(cfg))
    tmp.replace(run_dir / CONFIG_FILE)


def load_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(run_dir / CONFIG_FILE)


def _git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def write_env_record(run_dir: Path, trainer) -> None:
    """env.json: what a reader needs to reproduce the run (versions, devices, world, git)."""
    import lightning
    import torch

    import dtrain

    record = {
        "argv": sys.argv,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"dtrain": dtrain.__version__, "torch": torch.__version__, "lightning": lightning.__version__},
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count(),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "precision": trainer.precision,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "git": _git_state(),
    }
    (run_dir / ENV_FILE).write_text(json.dumps(record, indent=2))
