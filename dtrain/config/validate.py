"""Checks a composed config for mistakes a user can make, before anything is trained or written.

Nothing here imports torch, except `check_devices`, which has to ask what the machine has (after
setting OpenMP's wait policy, which torch's OpenMP reads once: dtrain.launch.threads).
"""

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError
from dtrain.launch.threads import import_torch


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


def _positive_int(cfg: DictConfig, key: str, allow: tuple = (), example: str = "") -> None:
    value = _value(cfg, key)
    if value is None or (not isinstance(value, bool) and value in allow):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        words = "".join(f" or {word}" for word in allow if isinstance(word, str))
        raise ConfigError(key, f"expected a positive integer{words}, got {value!r}" + (f"; e.g. {example}" if example else ""))


def _whole_number(cfg: DictConfig, key: str, example: str, maximum: int | None = None) -> None:
    value = _value(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (maximum is not None and value > maximum):
        upto = f" up to {maximum}" if maximum is not None else ""
        raise ConfigError(key, f"expected a whole number from 0{upto}, got {value!r}; e.g. {example}")


def _non_negative_number(cfg: DictConfig, key: str, example: str) -> None:
    value = _value(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(key, f"expected a number of at least 0, got {value!r}; e.g. {key}={example}")


def _true_or_false(cfg: DictConfig, key: str) -> None:
    value = _value(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")


def _moved_to_runtime(cfg: DictConfig) -> None:
    """Activation checkpointing and compile are the parallel layer's, not a dtrain task's (a
    user's own module may take arguments of these names)."""
    if not str(_value(cfg, "model._target_") or "").startswith("dtrain."):
        return
    for option in ("activation_checkpointing", "compile"):
        if _value(cfg, f"model.{option}") is not None:
            raise ConfigError(f"model.{option}", f"is a run setting now: drop it and give runtime.{option}=true")


def _val_check_interval(cfg: DictConfig) -> None:
    """Lightning's `val_check_interval`: a number of training batches, or a share of an epoch."""
    key = "trainer.val_check_interval"
    value = _value(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (isinstance(value, float) and value > 1):
        raise ConfigError(key, f"expected a number of batches (e.g. {key}=100) or a share of an epoch up to 1.0 (e.g. {key}=0.25), got {value!r}")


def _split_fractions(cfg: DictConfig) -> None:
    """The shares of the data held out for validation and testing: each in [0, 1), together < 1."""
    shares = {}
    for key in ("data.val_fraction", "data.test_fraction"):
        value = _value(cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(key, f"must be a share of the data from 0 up to (not including) 1, got {value!r}; e.g. {key}=0.1")
        shares[key] = value
    if sum(shares.values()) >= 1:
        raise ConfigError("data.val_fraction", f"with data.test_fraction it holds out {sum(shares.values()):g} of the data, leaving none to train on; keep their sum below 1")


# Sizes a net's config may set; each must be a positive integer (or a list of them).
_NET_SIZES = ("hidden", "layers", "n_layers", "n_heads", "heads", "d_model", "latent_dim", "channels", "width", "depth",
              "embed_dim", "time_dim", "encoder_layers", "max_len")


def _net_sizes(cfg: DictConfig) -> None:
    net = _value(cfg, "model.net")
    if not isinstance(net, DictConfig):
        return
    for name in _NET_SIZES:
        # sizes that follow the data (${shapes...}) are known only at run time: not checked here
        value = OmegaConf.select(net, name, default=None, throw_on_resolution_failure=False)
        values = list(value) if OmegaConf.is_list(value) else [value]
        if value is not None and any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
            raise ConfigError(f"model.net.{name}", f"expected a positive integer{' (or a list of them)' if OmegaConf.is_list(value) else ''}, got {value!r}")
    dropout = OmegaConf.select(net, "dropout", default=None, throw_on_resolution_failure=False)
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1):
        raise ConfigError("model.net.dropout", f"is the share of activations zeroed in training: from 0 up to (not including) 1, got {dropout!r}; e.g. model.net.dropout=0.1")


# What Lightning's Trainer(precision=...) accepts (lightning.fabric.connector._PRECISION_INPUT;
# tests/test_bad_input.py checks this list against the installed Lightning).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true",
              "64", "32", "16", "bf16", 64, 32, 16)


WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # what wandb.Settings(mode=) accepts


def _precision(cfg: DictConfig) -> None:
    value = _value(cfg, "trainer.precision")
    if value is not None and value not in PRECISIONS:
        choices = ", ".join(p for p in PRECISIONS if isinstance(p, str) and "-" in p)
        raise ConfigError("trainer.precision", f"{value!r} is not a precision Lightning knows; choose one of: {choices}")


# What Lightning's StrategyRegistry holds (tests/test_startup.py checks this list against the
# installed Lightning): named here so that a mistake is found without importing Lightning and torch.
LIGHTNING_STRATEGIES = (
    "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true", "ddp_notebook",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1",
    "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_tpu", "single_xla", "xla", "xla_debug",
)


def _strategy_name(cfg: DictConfig) -> None:
    """A strategy given by name (`trainer.strategy=ddp`) must be one Lightning registers;
    dtrain's own trainers give theirs as a `_target_`."""
    value = _value(cfg, "trainer.strategy")
    if not isinstance(value, str) or value == "auto":
        return
    if value not in LIGHTNING_STRATEGIES and value not in ("dp",):
        raise ConfigError("trainer.strategy", f"{value!r} is not a strategy Lightning knows; pick a dtrain trainer instead (trainer=ddp, trainer=fsdp, trainer=deepspeed_zero2, ...; `python -m dtrain --help` lists them)")


def writable_dir(path: Path) -> bool:
    """Whether `path` exists as a writable folder or could be created as one: tried for real
    (a folder made and removed in its nearest existing parent), since permission bits do not say
    everything (root may "write" /proc, a read-only mount says yes to os.access for root)."""
    import tempfile

    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                return False
            try:
                os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".dtrain-write-check-"))
            except OSError:
                return False
            return True
    return False


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first mistake found in the composed config."""
    _positive_number(cfg, "model.optimizer.lr", "3e-4")
    _positive_int(cfg, "data.batch_size")
    _positive_int(cfg, "trainer.max_epochs", allow=(-1,))
    _positive_int(cfg, "trainer.max_steps", allow=(-1,))
    _positive_int(cfg, "trainer.accumulate_grad_batches")
    _positive_int(cfg, "trainer.num_nodes")
    _positive_int(cfg, "trainer.check_val_every_n_epoch")
    _whole_number(cfg, "seed", "seed=1234", maximum=2**32 - 1)  # numpy's generators take 32 bits
    _whole_number(cfg, "data.num_workers", "data.num_workers=2")
    _non_negative_number(cfg, "model.optimizer.weight_decay", "0.01")
    _non_negative_number(cfg, "trainer.gradient_clip_val", "1.0")
    _true_or_false(cfg, "test")
    _true_or_false(cfg, "runtime.skip_nonfinite")
    _true_or_false(cfg, "runtime.activation_checkpointing")
    _true_or_false(cfg, "runtime.compile")
    _moved_to_runtime(cfg)
    _positive_int(cfg, "runtime.threads", allow=("auto",), example="runtime.threads=1")
    _positive_number(cfg, "runtime.collective_timeout_s", "600")
    run_id = _value(cfg, "run_id")
    if run_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(run_id)):
        raise ConfigError("run_id", f"names the run's W&B run and folders: letters, digits, - and _ only (up to 64), got {run_id!r}; or leave it out and dtrain derives one")
    if _value(cfg, "shapes"):
        raise ConfigError("shapes", "is filled from the datamodule at run time; set the data's own keys (data.*) instead")
    _val_check_interval(cfg)
    _split_fractions(cfg)
    _net_sizes(cfg)
    _precision(cfg)
    _strategy_name(cfg)
    mode = _value(cfg, "logger.wandb.mode")
    if mode is not None and mode not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", f"{mode!r} is not a W&B mode; use offline (files in the run directory), online (syncs) or disabled")
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
    from dtrain.parallel.dims import check_strategy_options

    settle(cfg)  # launcher=slurm: the trainer's nodes and devices follow launcher.*
    check_strategy_options(cfg)


def _device_count(devices, available: int) -> int:
    if devices in ("auto", -1, "-1"):
        return max(available, 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        return int(devices)
    except (TypeError, ValueError):
        raise ConfigError("trainer.devices", f"expected a number of devices, a list of device indices or auto, got {devices!r}; e.g. trainer.devices=2") from None


def uses_gpu(trainer: DictConfig) -> bool:
    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator == "auto":
        return import_torch().cuda.is_available()
    return False


def check_devices(trainer: DictConfig) -> int:
    """Raise ConfigError if the machine lacks the devices asked for; return the process count per node."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ConfigError("trainer.accelerator", f"unknown accelerator {accelerator!r}; use cpu, gpu or auto")
    if uses_gpu(trainer):
        available = import_torch().cuda.device_count()
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
