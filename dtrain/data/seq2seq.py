"""Generated sequence-to-sequence tasks: reverse or sort a random string of symbols."""

import torch
from torch.utils.data import TensorDataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule

BOS = 0  # token 0 starts every target; symbols are 1..num_symbols


class Seq2SeqDataModule(DataModule):
    """Pairs (source, target): source is `length` random symbols, target is BOS followed by the
    source reversed (`task=reverse`) or sorted (`task=sort`). Sets are fixed by `split_seed`."""

    def __init__(
        self,
        task: str = "reverse",
        num_symbols: int = 10,
        length: int = 8,
        num_train: int = 8000,
        num_val: int = 500,
        num_test: int = 1000,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        if task not in ("reverse", "sort"):
            raise ConfigError("data.task", f"unknown task {task!r}; choose reverse or sort")
        self.task, self.num_symbols, self.length = task, num_symbols, length
        self.sizes, self.split_seed = (num_train, num_val, num_test), split_seed

    @property
    def shapes(self) -> dict[str, int]:
        return {"vocab_size": self.num_symbols + 1, "max_len": self.length + 1, "seq_len": self.length}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(self.split_seed)
        source = torch.randint(1, self.num_symbols + 1, (sum(self.sizes), self.length), generator=generator)
        output = source.flip(1) if self.task == "reverse" else source.sort(dim=1).values
        target = torch.cat([torch.full((len(source), 1), BOS), output], dim=1)
        bounds = torch.tensor(self.sizes).cumsum(0).tolist()
        starts = [0, *bounds[:-1]]
        self.train_set, self.val_set, self.test_set = (TensorDataset(source[a:b], target[a:b]) for a, b in zip(starts, bounds))
