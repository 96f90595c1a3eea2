"""What a net declares about how it may be split, as plain names and sizes.

A net supports tensor parallelism by returning a `TensorParallelPlan` from a
`tensor_parallel_plan()` method, and pipeline parallelism by returning its ordered layers from
`pipeline_layers()`. A net may also say, from its constructor's arguments alone, which of them
the tensor size must divide (a static `tensor_parallel_counts(<argument>, ...)` returning
`{argument: count}`, e.g. the heads), so that a size that does not fit is refused before any
process starts rather than once every rank has built the net. The parallel layer (dtrain.parallel) reads these declarations and does the
splitting; a net never imports torch.distributed, Lightning or Hydra, and a user's own net that
declares the same gets the same strategies.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorParallelPlan:
    """The Megatron split of a net's linear layers over the tensor-parallel ranks.

    colwise: linear layers split by output features. Their input is the whole (replicated)
        activation; each rank computes a slice of the outputs (heads, hidden units).
    rowwise: linear layers split by input features. Their input is the sharded output of the
        colwise layers before them; each rank's partial sums are all-reduced into the whole output.
    divisible: other counts the tensor size must divide, by what they are ("blocks.0.attn heads"):
        an attention layer's heads are never cut in half.
    """

    colwise: tuple[str, ...]
    rowwise: tuple[str, ...]
    divisible: dict[str, int] = field(default_factory=dict)
