"""`runtime.collective_timeout_s`: how long a rank waits in a collective (an all-reduce, a
barrier) for the others before the run fails. A rank that dies is seen at once (its sockets
close, dtrain.launch.local names it); this bounds the wait on one that hangs.

Lightning's strategies take it as `timeout` and hand it to torch.distributed.init_process_group.
"""

import inspect
from datetime import timedelta

from omegaconf import DictConfig, OmegaConf

KEY = "runtime.collective_timeout_s"


def collective_timeout(cfg: DictConfig) -> timedelta:
    return timedelta(seconds=float(OmegaConf.select(cfg, KEY, default=600)))


def strategy_with_timeout(strategy, timeout: timedelta):
    """The Trainer's `strategy` argument, made with `timeout`: a registered name ("ddp",
    "deepspeed_stage_2") becomes the strategy it names, a config with `_target_` is built with
    `timeout=` where the target takes it; anything else ("auto", one device) is left as it is."""
    from hydra.utils import get_object, instantiate
    from lightning.pytorch.strategies import StrategyRegistry

    if isinstance(strategy, str):
        entry = StrategyRegistry[strategy] if strategy in StrategyRegistry else None  # the registry is a dict of names
        if entry is None or not _takes_timeout(entry["strategy"]):
            return strategy
        return entry["strategy"](**entry["init_params"], timeout=timeout)
    if isinstance(strategy, DictConfig) and "_target_" in strategy and _takes_timeout(get_object(strategy._target_)):
        return instantiate(strategy, timeout=timeout)
    return strategy


def _takes_timeout(target) -> bool:
    """`timeout` is a parameter of the target, or of the Lightning strategy a dtrain factory
    passes its keyword arguments on to (dtrain.parallel)."""
    parameters = inspect.signature(target).parameters
    if "timeout" in parameters:
        return True
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return passes_on and getattr(target, "__module__", "").startswith("dtrain.parallel")
