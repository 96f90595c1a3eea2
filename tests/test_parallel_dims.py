"""ParallelDims: how every trainer divides the processes, refused in one line when the sizes do
not fit, decided without torch (config/ validates before torch loads)."""

import subprocess
import sys

import pytest

from dtrain.config.compose import compose
from dtrain.config.errors import ConfigError
from dtrain.parallel.dims import ParallelDims, dims_of


def dims_for(tmp_path, *overrides: str, processes: int = 2) -> ParallelDims:
    return ParallelDims.from_config(compose(["model=transformer", *overrides], run_dir=tmp_path).trainer, processes)


@pytest.mark.parametrize(
    "overrides,processes,expected",
    [
        (("trainer=cpu",), 1, ParallelDims(world=1, replicate=1)),
        (("trainer=ddp",), 2, ParallelDims(world=2, replicate=2)),
        (("trainer=ddp", "trainer.num_nodes=2"), 2, ParallelDims(world=4, replicate=4)),
        (("trainer=fsdp",), 2, ParallelDims(world=2, shard=2)),
        (("trainer=deepspeed_zero3",), 2, ParallelDims(world=2, shard=2)),
        (("trainer=model_parallel",), 2, ParallelDims(world=2, tensor=2)),
        # "auto" tensor parallel is a node's processes; the nodes are FSDP2 replicas
        (("trainer=model_parallel", "trainer.strategy.tensor_parallel_size=auto", "trainer.num_nodes=2"), 2, ParallelDims(world=4, shard=2, tensor=2)),
        (("trainer=model_parallel", "trainer.strategy.tensor_parallel_size=auto", "trainer.strategy.data_parallel_size=1"), 4, ParallelDims(world=4, tensor=4)),
        (("trainer=pipeline",), 2, ParallelDims(world=2, pipeline=2)),
        (("trainer=pipeline", "trainer.num_nodes=2"), 2, ParallelDims(world=4, replicate=2, pipeline=2)),
    ],
)
def test_every_trainer_divides_its_processes(tmp_path, overrides, processes, expected):
    dims = dims_for(tmp_path, *overrides, processes=processes)
    assert dims == expected
    assert dims.data_parallel * dims.model_parallel == dims.world


def test_ranks_of_one_replica_are_consecutive():
    dims = ParallelDims(world=8, replicate=2, pipeline=4)
    assert [dims.data_parallel_rank(rank) for rank in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "overrides,key,fix",
    [
        (("trainer=model_parallel", "trainer.strategy.tensor_parallel_size=3"), "trainer.strategy.tensor_parallel_size", "divisor of 2"),
        (("trainer=model_parallel", "trainer.strategy.tensor_parallel_size=0"), "trainer.strategy.tensor_parallel_size", "positive"),
        (("trainer=model_parallel", "trainer.strategy.tensor_parallel_size=2", "trainer.strategy.data_parallel_size=2"), "trainer.strategy.tensor_parallel_size", "must equal the 2 processes"),
        (("trainer=pipeline", "trainer.strategy.stages=3"), "trainer.strategy.stages", "divisor of 2"),
        (("trainer=pipeline", "trainer.strategy.stages=auto"), "trainer.strategy.stages", "positive"),
    ],
)
def test_sizes_that_do_not_fit_are_refused_by_name(tmp_path, overrides, key, fix):
    with pytest.raises(ConfigError) as error:
        dims_for(tmp_path, *overrides)
    assert error.value.key == key and fix in str(error.value)


def test_outside_a_trainer_everything_is_one_replica():
    assert dims_of(None) == ParallelDims(world=1)


def test_deciding_the_dims_imports_no_torch():
    code = (
        "import sys; from dtrain.config.compose import compose; from dtrain.config.validate import validate; "
        "from dtrain.parallel.dims import ParallelDims; "
        "cfg = compose(['model=transformer', 'trainer=model_parallel'], run_dir='/tmp/unused'); "
        "ParallelDims.from_config(cfg.trainer, 2); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
