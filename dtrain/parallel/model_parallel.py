"""Lightning's ModelParallelStrategy (tensor parallel x FSDP2 on a 2-D device mesh) that shards
any dtrain task by itself, so tasks never need a `configure_model` of their own."""

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from dtrain.config.errors import ConfigError
from dtrain.parallel import tensor_parallel
from dtrain.parallel.restore_order import LoaderAfterRestore


def shard(module: nn.Module, mesh) -> None:
    """Tensor-parallel plan over mesh["tensor_parallel"], then FSDP2 over mesh["data_parallel"].

    Each net (a child of the task holding parameters) is sharded layer by layer (every element of
    its ModuleLists, e.g. transformer blocks, gathers its weights only while it runs), then as a
    whole for the rest. Metrics and other parameter-free children are left alone.
    """
    from torch.distributed.fsdp import fully_shard

    tp_mesh, dp_mesh = mesh["tensor_parallel"], mesh["data_parallel"]
    for net in module.children():
        if not any(True for _ in net.parameters()):
            continue
        if tp_mesh.size() > 1:
            tensor_parallel.parallelize(net, tp_mesh)
        for child in net.modules():
            if isinstance(child, nn.ModuleList):
                for layer in child:
                    fully_shard(layer, mesh=dp_mesh)
        fully_shard(net, mesh=dp_mesh)


class ModelParallel(LoaderAfterRestore, ModelParallelStrategy):
    """ModelParallelStrategy whose sizes default sensibly and whose sharding is dtrain's plan.

    `tensor_parallel_size` ranks (consecutive global ranks) hold one replica's shards;
    `data_parallel_size` replicas (FSDP2) train on different data. Give one size; the other is
    the world size divided by it. The plan is applied in the task's `configure_model` hook,
    which the strategy supplies (after any the task defines itself). A resume continues mid-epoch
    from the checkpoint's position (LoaderAfterRestore).
    """

    def __init__(self, data_parallel_size="auto", tensor_parallel_size="auto", **kwargs):
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size, **kwargs)

    @property
    def model_parallel_size(self) -> int:
        dp, tp = self._data_parallel_size, self._tensor_parallel_size
        world = self.num_nodes * self.num_processes
        if isinstance(tp, int):
            return tp
        if isinstance(dp, int) and dp > 0:
            return max(1, world // dp)
        return max(1, self.num_processes)  # Lightning's "auto": tensor parallel within a node

    def setup_environment(self) -> None:
        world = self.num_nodes * self.num_processes
        tp = self.model_parallel_size
        dp = self._data_parallel_size if isinstance(self._data_parallel_size, int) else world // tp
        if tp * dp != world:
            raise ConfigError("trainer.strategy.tensor_parallel_size", f"data_parallel_size={dp} x tensor_parallel_size={tp} must equal the {world} processes; give one of them")
        self._data_parallel_size, self._tensor_parallel_size = dp, tp
        super().setup_environment()
        module, strategy = self.lightning_module, self
        if "configure_model" not in vars(module):  # once per module, however many fit/test calls
            own_hook = module.configure_model

            def configure_model() -> None:
                own_hook()
                if not _is_sharded(module):
                    shard(module, strategy.device_mesh)

            module.configure_model = configure_model


def _is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())
