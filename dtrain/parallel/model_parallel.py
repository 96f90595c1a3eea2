"""Lightning's ModelParallelStrategy (tensor parallel x FSDP2 on a 2-D device mesh), sharding any
dtrain task by dtrain's one `parallelize` step, so tasks never need a `configure_model`."""

from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden

from dtrain.parallel.dims import ParallelDims, tensor_and_data_parallel
from dtrain.parallel.restore_order import LoaderAfterRestore


class ModelParallel(LoaderAfterRestore, ModelParallelStrategy):
    """ModelParallelStrategy whose sizes come from dtrain's ParallelDims and whose sharding is
    dtrain.parallel.parallelize (applied by its callback, with the mesh this strategy exposes).

    `tensor_parallel_size` ranks (consecutive global ranks) hold one replica's shards;
    `data_parallel_size` replicas (FSDP2) train on different data. Give one size; the other is
    the world size divided by it. A module with its own `configure_model` shards itself there,
    Lightning's way. A resume continues mid-epoch from the checkpoint's position
    (LoaderAfterRestore).
    """

    def __init__(self, data_parallel_size="auto", tensor_parallel_size="auto", **kwargs):
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size, **kwargs)
        self._sizes = (tensor_parallel_size, data_parallel_size)

    @property
    def parallel_dims(self) -> ParallelDims:
        tensor, data = self._sizes
        return tensor_and_data_parallel(tensor, data, self.num_nodes * self.num_processes, self.num_processes)

    @property
    def parallelize_mesh(self):
        """The (data_parallel, tensor_parallel) mesh dtrain's parallelize shards the nets over."""
        return self.device_mesh

    def setup_environment(self) -> None:
        dims = self.parallel_dims
        self._data_parallel_size, self._tensor_parallel_size = dims.shard, dims.tensor
        super().setup_environment()

    def setup(self, trainer) -> None:
        if is_overridden("configure_model", self.lightning_module):
            return super().setup(trainer)
        # Lightning's set-up, less its demand for a configure_model: the nets were parallelized
        # in the callbacks' set-up (dtrain.parallel.parallelize.Parallelize), on real devices.
        self.accelerator.setup(trainer)
        self.model = self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)
