"""Tensor parallelism from a net's declared plan (dtrain.nets.plans.TensorParallelPlan).

The net names its column-wise and row-wise linear layers; this module checks that every split
is whole over the tensor size and applies it with torch's DTensor styles. A colwise layer's
output stays sharded (its last dimension: heads or hidden units) and feeds the rowwise layer
after it, whose partial sums are all-reduced once; every layer's output outside that pair is
a plain, whole tensor, so the net's own code runs unchanged on a shard.
"""

from torch import nn

from dtrain.config.errors import ConfigError
from dtrain.nets.plans import TensorParallelPlan

KEY = "trainer.strategy.tensor_parallel_size"


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
