"""One step that parallelizes a task's nets, for every strategy, in a fixed order:

1. tensor parallel (the net's declared plan, over the mesh's tensor dimension);
2. activation checkpointing (each repeated block recomputed in backward);
3. torch.compile;
4. FSDP2 (`fully_shard`, over the mesh's data-parallel dimension), block by block, then the net.

The order is torchtitan's, for the same reasons. Tensor parallelism comes first because it
replaces the weights with DTensors and adds the hooks that redistribute activations: a block
checkpointed afterwards recomputes through those hooks, collectives included, and compile
traces the block as it will really run. Checkpointing wraps a block's forward before compile so
the compiled code includes the recomputation boundary. FSDP2 comes last: it shards whatever
parameters the steps before left (DTensors on the tensor dimension gain a data-parallel one)
and its all-gather hooks must sit at the final module boundaries, one unit per block.

`trainer=model_parallel` (dtrain.parallel.model_parallel) runs all four. Under every other
strategy the mesh is Lightning's or DeepSpeed's business: steps 2 and 3 run here, before
Lightning's FSDP or DeepSpeed wraps the net in the strategy's set-up, and FSDP1/ZeRO then shard
it their own way. Steps 2 and 3 keep parameter names, so checkpoints load with or without them.
"""

from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dtrain.config.errors import ConfigError
from dtrain.parallel.dims import ParallelDims
from dtrain.parallel.tensor_parallel import apply_tensor_parallel, check_plan
from dtrain.tasks.base import mark_no_decay


@dataclass(frozen=True)
class ParallelOptions:
    """`runtime.activation_checkpointing` and `runtime.compile`."""

    activation_checkpointing: bool = False
    compile: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ParallelOptions":
        return cls(
            activation_checkpointing=bool(OmegaConf.select(cfg, "runtime.activation_checkpointing", default=False)),
            compile=bool(OmegaConf.select(cfg, "runtime.compile", default=False)),
        )


def parallelize(net: nn.Module, dims: ParallelDims, options: ParallelOptions, mesh=None) -> None:
    """Apply the steps above to `net` in place. `mesh` (a 2-D DeviceMesh named data_parallel x
    tensor_parallel) is given under trainer=model_parallel only: tensor parallel and FSDP2 need it."""
    if mesh is not None and dims.tensor > 1:
        apply_tensor_parallel(net, mesh["tensor_parallel"])
    if options.activation_checkpointing:
        for block in blocks_to_checkpoint(net):
            checkpoint_forward(block)
    if options.compile:  # in place: parameter names (and checkpoints) stay as they are
        units = net.pipeline_layers() if dims.pipeline > 1 else [net]  # a pipeline stage runs its layers, not the net
        for unit in units:
            unit.compile()
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard

        for block in (block for module in net.modules() if isinstance(module, nn.ModuleList) for block in module):
            fully_shard(block, mesh=mesh["data_parallel"])  # each block gathers its weights only while it runs
        fully_shard(net, mesh=mesh["data_parallel"])


def nets_of(module: nn.Module) -> list[nn.Module]:
    """The nets of a LightningModule: a dtrain task's `net`, or else every child holding
    parameters (a user's module). Metrics and other parameter-free children are left alone."""
    net = getattr(module, "net", None)
    if isinstance(net, nn.Module):
        return [net]
    return [child for child in module.children() if any(True for _ in child.parameters())]


class Parallelize(Callback):
    """Runs `parallelize` on the module's nets once, in the set-up Lightning gives callbacks
    after the processes and the strategy's mesh exist and before the strategy wraps the module
    (DDP, FSDP, DeepSpeed) or builds its optimizers.

    A module with its own `configure_model` parallelizes itself under trainer=model_parallel,
    Lightning's way; it still gets checkpointing and compile here.
    """

    def __init__(self, dims: ParallelDims, options: ParallelOptions):
        self.dims, self.options = dims, options
        self._done: set[int] = set()

    def check(self, module: nn.Module) -> None:
        """Refuse, before any process waits on another, a net whose layers do not split over
        the tensor size (every rank raises the same one-line error)."""
        for net in nets_of(module):
            check_plan(net, self.dims.tensor)
            if self.options.activation_checkpointing:
                blocks_to_checkpoint(net)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if id(pl_module) in self._done:  # fit, then test: once
            return
        self._done.add(id(pl_module))
        mark_no_decay(pl_module)  # while shapes are whole: FSDP and ZeRO-3 later flatten them
        mesh = getattr(trainer.strategy, "parallelize_mesh", None)
        if mesh is not None and is_overridden("configure_model", pl_module):
            mesh = None
        for net in nets_of(pl_module):
            parallelize(net, self.dims, self.options, mesh)


def repeated_blocks(net: nn.Module) -> list[nn.Module]:
    """The units worth checkpointing: the entries of the net's nn.ModuleLists (transformer blocks,
    residual stages) or, in a net without any, the parameterised layers of its nn.Sequentials."""
    blocks = [block for module in net.modules() if isinstance(module, nn.ModuleList) for block in module]
    if not blocks:
        blocks = [
            layer for module in net.modules() if isinstance(module, nn.Sequential)
            for layer in module if not isinstance(layer, nn.Sequential) and any(True for _ in layer.parameters())
        ]
    return blocks


def blocks_to_checkpoint(net: nn.Module) -> list[nn.Module]:
    """`net`'s repeated blocks, or a ConfigError if it has none to checkpoint."""
    blocks = repeated_blocks(net)
    if not blocks:
        raise ConfigError("runtime.activation_checkpointing", f"{type(net).__name__} has no repeated blocks to checkpoint; set it to false")
    return blocks


def checkpoint_forward(module: nn.Module) -> None:
    """Make `module` keep only its inputs for backward and recompute the rest (non-reentrant
    checkpointing, which works under DDP, FSDP, FSDP2 and DeepSpeed alike)."""
    from torch.utils.checkpoint import checkpoint

    forward = module.forward

    def checkpointed(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    module.forward = checkpointed
