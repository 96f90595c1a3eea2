"""StepSeed: every batch's seed depends only on (seed, epoch, batch, data-parallel rank), however
the seeds are derived, so a resumed epoch draws what an uninterrupted one would."""

from types import SimpleNamespace

import torch

from dtrain.callbacks.step_seed import SEEDS_AT_ONCE, StepSeed, step_seed
from dtrain.parallel.dims import ParallelDims


def test_each_batch_is_seeded_with_its_own_seed_from_any_starting_batch():
    strategy = SimpleNamespace(parallel_dims=ParallelDims(world=2, replicate=2), root_device=torch.device("cpu"))
    trainer = SimpleNamespace(strategy=strategy, global_rank=1, current_epoch=0)
    callback = StepSeed(seed=7)
    callback.on_train_start(trainer, None)
    for epoch, first in ((0, 0), (1, 37), (1, 5)):  # a resumed epoch starts anywhere; a rerun goes back
        trainer.current_epoch = epoch
        for batch_idx in range(first, first + SEEDS_AT_ONCE + 3):  # past one batch of derived seeds
            callback.on_train_batch_start(trainer, None, None, batch_idx)
            assert torch.random.initial_seed() == step_seed(7, epoch, batch_idx, 1), (epoch, batch_idx)
    assert step_seed(7, 0, 3, 0) != step_seed(7, 0, 3, 1) != step_seed(7, 1, 3, 1)
