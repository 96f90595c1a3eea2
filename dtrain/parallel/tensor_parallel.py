"""Tensor parallelism from a net's declared plan (dtrain.nets.plans.TensorParallelPlan).

The net names its column-wise and row-wise linear layers; this module checks that every split
is whole over the tensor size and applies it with torch's DTensor styles. A colwise layer's
output stays sharded (its last dimension: heads or hidden units) and feeds the rowwise layer
after it, whose partial sums are all-reduced once; every layer's output outside that pair is
a plain, whole tensor, so the net's own code runs unchanged on a shard.
"""

import inspect

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from dtrain.config.errors import ConfigError
from dtrain.nets.plans import TensorParallelPlan

KEY = "trainer.strategy.tensor_parallel_size"


def check_declared_counts(net_cfg: DictConfig | None, tp: int) -> None:
    """Before any rank starts: the counts a net's class declares from its constructor arguments
    (`tensor_parallel_counts`, e.g. heads) must split over `tp` ranks. A net that declares none,
    or whose counts come from the data's shapes, is checked once built (check_plan)."""
    target = net_cfg.get("_target_") if isinstance(net_cfg, DictConfig) else None
    if tp == 1 or not target:
        return
    from hydra.utils import get_class

    try:
        net_class = get_class(target)
    except Exception:
        return  # a target that does not import is reported where the net is built
    declare = getattr(net_class, "tensor_parallel_counts", None)
    if not callable(declare):
        return
    defaults = {name: p.default for name, p in inspect.signature(net_class).parameters.items()}
    arguments = {}
    for name in inspect.signature(declare).parameters:
        try:
            arguments[name] = net_cfg[name] if name in net_cfg else defaults[name]
        except (OmegaConfBaseException, KeyError):
            return  # known only once the data is there (e.g. ${shapes...})
        if arguments[name] is inspect.Parameter.empty:
            return
    for name, count in declare(**arguments).items():
        if count % tp:
            raise ConfigError(KEY, f"model.net.{name}={count} does not split over {tp} tensor-parallel ranks; use a tensor_parallel_size that divides {count}")


def plan_of(net: nn.Module) -> TensorParallelPlan | None:
    declare = getattr(net, "tensor_parallel_plan", None)
    return declare() if callable(declare) else None


def check_plan(net: nn.Module, tp: int) -> TensorParallelPlan | None:
    """`net`'s plan, or a ConfigError naming the layer or count that does not split over `tp` ranks."""
    plan = plan_of(net)
    if tp == 1:
        return plan
    if plan is None:
        raise ConfigError(KEY, f"{type(net).__name__} declares no tensor-parallel plan (a tensor_parallel_plan() method); use {KEY}=1 (FSDP2 only)")
    for names, style in ((plan.colwise, "colwise"), (plan.rowwise, "rowwise")):
        for name in names:
            linear = net.get_submodule(name)
            if not isinstance(linear, nn.Linear):
                raise ConfigError(KEY, f"{type(net).__name__}'s plan names {name}, a {type(linear).__name__}; a plan splits nn.Linear layers only")
            size, what = (linear.out_features, "outputs") if style == "colwise" else (linear.in_features, "inputs")
            if size % tp:
                raise ConfigError(KEY, f"{name} has {size} {what}, which do not split over {tp} ranks; use a divisor of {size}")
    for what, count in plan.divisible.items():
        if count % tp:
            layer, _, unit = what.rpartition(" ")
            raise ConfigError(KEY, f"{layer} has {count} {unit}, which do not split over {tp} ranks; use a divisor of {count}")
    return plan


def apply_tensor_parallel(net: nn.Module, tp_mesh) -> None:
    """Shard `net`'s planned layers over the 1-D `tp_mesh` in place."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = check_plan(net, tp_mesh.size())
    styles = {**{name: ColwiseParallel() for name in plan.colwise}, **{name: RowwiseParallel() for name in plan.rowwise}}
    parallelize_module(net, tp_mesh, styles)
