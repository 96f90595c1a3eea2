"""Seeds torch's RNG from the position in training before every batch, so a resumed run draws
the same dropout masks and noise as an uninterrupted one."""

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

# Seeds are derived this many batches at a time: one derivation inside the step, after the
# step's math has pushed numpy's code out of the CPU caches, took about 0.1 ms (10 us warm).
SEEDS_AT_ONCE = 256


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(1)[0])


class StepSeed(Callback):
    def __init__(self, seed: int):
        self.seed = seed
        self._rank: int | None = None
        self._seeds: dict[tuple[int, int], int] = {}  # (epoch, batch index) -> seed, for the batches ahead

    def on_train_start(self, trainer, pl_module) -> None:
        # The data-parallel rank: tensor-parallel shards of one replica must draw the same dropout.
        from dtrain.parallel.dims import dims_of

        self._rank = dims_of(trainer).data_parallel_rank(trainer.global_rank)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        seed = self._seed(trainer.current_epoch, batch_idx)
        device = trainer.strategy.root_device
        if device.type in ("cpu", "cuda"):
            # The generators this rank draws from, and no others: torch.manual_seed also queues a
            # lazy seed of every CUDA device, formatting a stack trace each time (0.12 ms a
            # batch on a CPU machine, 3% of a small net's step).
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)  # this rank's device (Lightning made it current)
        else:
            torch.manual_seed(seed)

    def _seed(self, epoch: int, batch_idx: int) -> int:
        if (epoch, batch_idx) not in self._seeds:  # the next batches' too (a resumed epoch starts anywhere)
            ahead = range(batch_idx, batch_idx + SEEDS_AT_ONCE)
            self._seeds = {(epoch, i): step_seed(self.seed, epoch, i, self._rank) for i in ahead}
        return self._seeds[epoch, batch_idx]
