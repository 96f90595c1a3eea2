"""Tensor-parallel plans: which linear layers of a net are split by columns and which by rows.

A transformer block is sharded the Megatron way: the q/k/v projections and the MLP's first
layer by columns (each rank computes a slice of the heads and hidden units, no communication),
the attention output and the MLP's second layer by rows (partial sums, all-reduced once per
sub-layer). Cross-attention (`cross.*`) is split like self-attention. Layers are found by
name, so any net that names its layers like dtrain.nets.transformer (`attn.q/k/v/out`,
`mlp.up/down`) gets the plan.
"""

from torch import nn

from dtrain.config.errors import ConfigError

COLUMN_WISE = ("attn.q", "attn.k", "attn.v", "cross.q", "cross.k", "cross.v", "mlp.up")
ROW_WISE = ("attn.out", "cross.out", "mlp.down")
KEY = "trainer.strategy.tensor_parallel_size"


def _matches(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def layer_plan(net: nn.Module) -> dict[str, str]:
    """{module name: "colwise" | "rowwise"} for the linear layers of `net` that a plan shards."""
    plan = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            if _matches(name, COLUMN_WISE):
                plan[name] = "colwise"
            elif _matches(name, ROW_WISE):
                plan[name] = "rowwise"
    return plan


def check_shapes(net: nn.Module, tp: int) -> dict[str, str]:
    """The plan for `net`, or a ConfigError naming the layer whose shape does not split over `tp` ranks."""
    plan = layer_plan(net)
    if tp == 1:
        return plan
    if not plan:
        raise ConfigError(KEY, f"{type(net).__name__} has no layers a tensor-parallel plan knows (attn.q/k/v/out, mlp.up/down); use {KEY}=1 (FSDP2 only)")
    for name, style in plan.items():
        linear = net.get_submodule(name)
        size = linear.out_features if style == "colwise" else linear.in_features
        if size % tp:
            raise ConfigError(KEY, f"{name} has {size} {'outputs' if style == 'colwise' else 'inputs'}, which do not split over {tp} ranks; use a divisor of {size}")
    for name, module in net.named_modules():
        head_dim = getattr(module, "head_dim", None)
        if isinstance(head_dim, int) and _matches(name + ".q", COLUMN_WISE) and hasattr(module, "q"):
            heads = module.q.out_features // head_dim
            if heads % tp:
                raise ConfigError(KEY, f"{name} has {heads} heads, which do not split over {tp} ranks; use a divisor of {heads}")
    return plan


def parallelize(net: nn.Module, tp_mesh) -> None:
    """Shard `net`'s planned layers over the 1-D `tp_mesh` in place; layer outputs stay plain tensors."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = check_shapes(net, tp_mesh.size())
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    parallelize_module(net, tp_mesh, {name: styles[style]() for name, style in plan.items()})
