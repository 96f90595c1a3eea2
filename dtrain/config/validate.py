"""Checks a composed config for mistakes a user can make, before anything is trained or written.

Nothing here imports torch, except `check_devices`, which has to ask what the machine has.
"""

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError


def _value(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def _positive_number(cfg: DictConfig, key: str, example: str) -> None:
    value = _value(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a positive number, got {value!r}; e.g. {key}={example}")
    if value <= 0:
        raise ConfigError(key, f"must be positive, got {value}; e.g. {key}={example}")


def _positive_int(cfg: DictConfig, key: str, allow: tuple = ()) -> None:
    value = _value(cfg, key)
    if value is None or value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"expected a positive integer, got {value!r}")


def writable_dir(path: Path) -> bool:
    """Whether `path` exists as a writable folder or could be created as one."""
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            return ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)
    return False


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first mistake found in the composed config."""
    _positive_number(cfg, "model.optimizer.lr", "3e-4")
    _positive_int(cfg, "data.batch_size")
    _positive_int(cfg, "trainer.max_epochs", allow=(-1,))
    _positive_int(cfg, "trainer.max_steps", allow=(-1,))
    _positive_int(cfg, "trainer.accumulate_grad_batches")
    _positive_int(cfg, "trainer.num_nodes")
    trust = _value(cfg, "runtime.trust_checkpoints")
    if trust is not None and not isinstance(trust, bool):
        raise ConfigError("runtime.trust_checkpoints", f"expected true or false, got {trust!r}")
    path = _value(cfg, "data.path")
    if path is not None and not Path(path).exists():
        raise ConfigError("data.path", f"{path} does not exist; point it at your data or drop the override to use the default")
    runs_dir = Path(cfg.paths.runs_dir)
    if not writable_dir(runs_dir):
        raise ConfigError("paths.runs_dir", f"cannot create or write {runs_dir}; choose a writable folder, e.g. paths.runs_dir=$HOME/runs")
    from dtrain.launch.slurm import settle
    from dtrain.parallel.compat import check_compat

    settle(cfg)  # launcher=slurm: the trainer's nodes and devices follow launcher.*
    check_compat(cfg)


def _device_count(devices, available: int) -> int:
    if devices in ("auto", -1, "-1"):
        return max(available, 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return int(devices)


def uses_gpu(trainer: DictConfig) -> bool:
    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def check_devices(trainer: DictConfig) -> int:
    """Raise ConfigError if the machine lacks the devices asked for; return the process count per node."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ConfigError("trainer.accelerator", f"unknown accelerator {accelerator!r}; use cpu, gpu or auto")
    if uses_gpu(trainer):
        import torch

        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError("trainer.accelerator", "no CUDA GPU on this machine; use trainer=cpu (or trainer=ddp for several CPU processes)")
        kind = "GPU(s)"
    else:
        available = os.cpu_count() or 1
        kind = "CPU core(s)"
        if str(trainer.get("precision")) in ("16-mixed", "16"):
            raise ConfigError("trainer.precision", "16-mixed needs a GPU (on the CPU Lightning would silently use bf16); use trainer.precision=bf16-mixed")
    wanted = _device_count(trainer.get("devices", 1), available)
    if wanted > available:
        raise ConfigError("trainer.devices", f"asks for {wanted} devices but this machine has {available} {kind}; use trainer.devices={available} or fewer")
    if wanted < 1:
        raise ConfigError("trainer.devices", f"must be at least 1, got {wanted}")
    return wanted
