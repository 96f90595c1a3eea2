"""DeepSpeed pieces Lightning leaves to the user: the JIT-build cache and DeepSpeed's CPU Adam for offload."""

import os
from pathlib import Path


def persistent_extensions_dir() -> Path:
    """DeepSpeed compiles its C++ ops (shared-memory comm, CPU Adam) on first use, about a minute;
    keep them under dtrain's cache dir so that happens once per machine, not once per temp dir."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        cache = Path(os.environ.get("DTRAIN_CACHE_DIR", Path.home() / ".cache" / "dtrain"))
        os.environ["TORCH_EXTENSIONS_DIR"] = str(cache / "torch_extensions")
    return Path(os.environ["TORCH_EXTENSIONS_DIR"])


def offloads_optimizer(config: dict) -> bool:
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


def to_cpu_adam(optimizer):
    """DeepSpeedCPUAdam with the same parameter groups and hyper-parameters as a torch Adam/AdamW.

    ZeRO-Offload steps the optimizer on the host and insists on DeepSpeed's vectorised Adam there;
    dtrain.parallel.dims.check_strategy_options refuses other optimizers with offload before any process starts.
    """
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    if isinstance(optimizer, DeepSpeedCPUAdam):
        return optimizer
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        raise TypeError(f"optimizer offload needs Adam or AdamW, got {type(optimizer).__name__}")
    defaults = optimizer.defaults
    groups = [{k: v for k, v in group.items() if k != "params"} | {"params": group["params"]} for group in optimizer.param_groups]
    return DeepSpeedCPUAdam(
        groups,
        lr=defaults["lr"],
        betas=defaults["betas"],
        eps=defaults["eps"],
        weight_decay=defaults["weight_decay"],
        amsgrad=defaults.get("amsgrad", False),
        adamw_mode=isinstance(optimizer, torch.optim.AdamW),
    )
