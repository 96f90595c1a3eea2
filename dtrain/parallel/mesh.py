"""Where a process sits among the data-parallel ranks, whatever the strategy."""


def model_parallel_size(strategy) -> int:
    """How many ranks hold pieces of one model replica (tensor-parallel shards, pipeline stages).

    dtrain's own strategies say so with `model_parallel_size`; Lightning's ModelParallelStrategy
    keeps its tensor-parallel size, where "auto" means every device of a node.
    """
    size = getattr(strategy, "model_parallel_size", None)
    if size is None:
        size = getattr(strategy, "_tensor_parallel_size", 1)
        if size == "auto":
            size = getattr(strategy, "num_processes", 1)
    return size if isinstance(size, int) and size > 0 else 1


def data_parallel_size(trainer) -> int:
    """How many model replicas train on different data; known before the strategy is set up.

    Ranks that hold pieces of one replica (tensor or pipeline parallel) load the same batch.
    Ranks are laid out replica by replica: global rank = replica * model_parallel_size + piece.
    """
    return max(1, trainer.world_size // model_parallel_size(trainer.strategy))


def data_parallel_size_and_rank(trainer) -> tuple[int, int]:
    """(data-parallel size, this process's data-parallel rank); (1, 0) outside a Trainer."""
    if trainer is None:
        return 1, 0
    size = data_parallel_size(trainer)
    return size, trainer.global_rank * size // trainer.world_size
