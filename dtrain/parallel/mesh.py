"""Where a process sits among the data-parallel ranks, whatever the strategy."""


def data_parallel_size(trainer) -> int:
    """How many model replicas train on different data; known before the strategy is set up.

    Ranks that hold pieces of one replica (tensor or pipeline parallel) load the same batch.
    """
    model_parallel = getattr(trainer.strategy, "model_parallel_size", None)
    if model_parallel is None:
        tensor_parallel = getattr(trainer.strategy, "_tensor_parallel_size", 1)
        model_parallel = tensor_parallel if isinstance(tensor_parallel, int) else 1
    return max(1, trainer.world_size // model_parallel)


def data_parallel_size_and_rank(trainer) -> tuple[int, int]:
    """(data-parallel size, this process's data-parallel rank); (1, 0) outside a Trainer."""
    if trainer is None:
        return 1, 0
    size = data_parallel_size(trainer)
    return size, trainer.global_rank * size // trainer.world_size
