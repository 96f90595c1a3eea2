"""Which training options combine with which strategy and precision: refused by name before any
process starts, instead of failing (or silently doing something else) inside a rank."""

from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError

_ADAM = ("torch.optim.Adam", "torch.optim.AdamW", "deepspeed.ops.adam.DeepSpeedCPUAdam")


def strategy_kind(trainer: DictConfig) -> str:
    """'deepspeed', 'fsdp' or the strategy's own name ('ddp', 'auto', ...)."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        return "deepspeed" if strategy.startswith("deepspeed") else "fsdp" if strategy.startswith("fsdp") else strategy
    target = str(strategy.get("_target_", ""))
    for kind in ("deepspeed", "fsdp"):
        if kind in target.lower():
            return kind
    return target.rsplit(".", 1)[-1]


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


def check_compat(cfg: DictConfig) -> None:
    """Raise ConfigError for a strategy/precision/option combination the libraries do not support."""
    trainer = cfg.trainer
    kind = strategy_kind(trainer)
    precision = str(trainer.get("precision", "32-true"))
    clip = trainer.get("gradient_clip_val")
    algorithm = trainer.get("gradient_clip_algorithm") or "norm"
    if kind == "Pipeline" and clip:
        raise ConfigError("trainer.gradient_clip_val", "gradient clipping is not supported with trainer=pipeline (each rank sees only its stage's gradients); set it to null")
    if kind in ("deepspeed", "fsdp") and precision in ("64-true", "64", "double"):
        raise ConfigError("trainer.precision", f"{kind} has no float64 mode; use 32-true (or trainer=ddp for 64-true)")
    if kind == "deepspeed" and clip and algorithm == "value":
        raise ConfigError("trainer.gradient_clip_algorithm", "DeepSpeed clips by norm only; drop gradient_clip_algorithm=value")
    if kind == "fsdp" and clip and algorithm == "norm":
        raise ConfigError(
            "trainer.gradient_clip_algorithm",
            "Lightning's FSDP cannot clip by the global norm; use +trainer.gradient_clip_algorithm=value (or a deepspeed_* trainer)",
        )
    if kind == "deepspeed":
        strategy = trainer.strategy
        offload = not isinstance(strategy, str) and (strategy.get("offload_optimizer") or strategy.get("offload_parameters"))
        optimizer = str(_get(cfg, "model.optimizer._target_", ""))
        if offload and optimizer and optimizer not in _ADAM:
            raise ConfigError(
                "model.optimizer",
                f"DeepSpeed offload steps the optimizer with its CPU Adam; {optimizer} is not Adam/AdamW: use model/optimizer=adamw",
            )
