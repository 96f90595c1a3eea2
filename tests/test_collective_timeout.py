"""runtime.collective_timeout_s reaches the process group of every strategy that has one (the
hung-rank test itself is in test_dead_rank.py)."""

from datetime import timedelta

import pytest
from omegaconf import OmegaConf

from dtrain.config.compose import compose
from dtrain.parallel.collective_timeout import collective_timeout, strategy_with_timeout

TEN = timedelta(seconds=10)


@pytest.mark.parametrize("name, kept", [("ddp", {}), ("ddp_spawn", {"_start_method": "spawn"}), ("ddp_find_unused_parameters_true", {"_ddp_kwargs": {"find_unused_parameters": True}})])
def test_a_strategy_name_becomes_that_strategy_with_the_timeout(name, kept):
    strategy = strategy_with_timeout(name, TEN)
    assert strategy._timeout == TEN
    for attribute, value in kept.items():  # what the registered name stands for is kept
        assert getattr(strategy, attribute) == value


@pytest.mark.parametrize("trainer", ["fsdp", "deepspeed_zero2", "model_parallel", "pipeline"])
def test_a_strategy_config_is_built_with_the_timeout(trainer):
    cfg = compose([f"trainer={trainer}", "runtime.collective_timeout_s=10"])
    assert strategy_with_timeout(cfg.trainer.strategy, collective_timeout(cfg))._timeout == TEN


def test_no_process_group_no_change():
    assert strategy_with_timeout("auto", TEN) == "auto"
    assert strategy_with_timeout("single_device", TEN) == "single_device"
    assert collective_timeout(OmegaConf.create({})) == timedelta(seconds=600)  # a run directory saved before the setting
