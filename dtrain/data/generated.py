"""Generated data for measuring speed: random tokens or random images of any size, made from the
seed in memory (nothing read or downloaded), so a benchmark runs the same anywhere."""

import torch
from torch.utils.data import Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule

# Each split draws from its own stream of `data_seed`, so the splits never share samples and,
# as in every datamodule, do not change with the run's seed (which orders the training samples).
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def _generator(data_seed: int, split: str) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * data_seed + SPLIT_STREAMS[split])


def _positive(key: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(key, f"must be a whole number of at least 1, got {value!r}")
    return value


def _split_sizes(train: int, val: int, test: int) -> dict[str, int]:
    """Samples per split, each checked (`data.<split>_samples`)."""
    return {split: _positive(f"data.{split}_samples", size) for split, size in zip(SPLIT_STREAMS, (train, val, test))}


class RandomTokens(Dataset):
    """`samples` windows of `block_size` + 1 uniform token ids: inputs and next-token targets."""

    def __init__(self, samples: int, block_size: int, vocab_size: int, generator: torch.Generator):
        self.tokens = torch.randint(vocab_size, (samples, block_size + 1), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        window = self.tokens[i]
        return window[:-1], window[1:]

    def gather(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `indices`, stacked (dtrain.data.batched)."""
        windows = self.tokens[torch.as_tensor(indices)]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class RandomImages(Dataset):
    """`samples` images in [-1, 1] with a random class each; the pixels repeat every
    `distinct` images, so a large set costs the memory of `distinct` images only."""

    def __init__(self, samples: int, distinct: int, channels: int, image_size: int, num_classes: int, generator: torch.Generator):
        self.pixels = torch.rand(min(distinct, samples), channels, image_size, image_size, generator=generator) * 2 - 1
        self.labels = torch.randint(num_classes, (samples,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.pixels[i % len(self.pixels)], self.labels[i]

    def gather(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `indices`, stacked (dtrain.data.batched)."""
        index = torch.as_tensor(indices)
        return self.pixels[index % len(self.pixels)], self.labels[index]


class GeneratedTokensDataModule(DataModule):
    """Uniform random tokens for a language model: `train_samples`, `val_samples` and
    `test_samples` windows of `block_size` tokens over `vocab_size` ids. Nothing to learn
    (the loss stays near ln(vocab_size)): for throughput and memory, not convergence."""

    def __init__(
        self, vocab_size: int = 50304, block_size: int = 1024, train_samples: int = 2048, val_samples: int = 32, test_samples: int = 32,
        data_seed: int = 0, **shared,
    ):
        super().__init__(val_fraction=None, test_fraction=None, **shared)
        self.vocab_size = _positive("data.vocab_size", vocab_size)
        self.block_size = _positive("data.block_size", block_size)
        self.data_seed = data_seed
        self.samples = _split_sizes(train_samples, val_samples, test_samples)

    @property
    def shapes(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size, "block_size": self.block_size}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (
                RandomTokens(self.samples[split], self.block_size, self.vocab_size, _generator(self.data_seed, split)) for split in SPLIT_STREAMS
            )


class GeneratedImagesDataModule(DataModule):
    """Random images for an image classifier: `channels` x `image_size` x `image_size` pixels in
    [-1, 1] (as dtrain's image datamodules scale them), `num_classes` random labels, `distinct`
    different images per split. For throughput and memory, not accuracy."""

    def __init__(
        self,
        image_size: int = 224,
        channels: int = 3,
        num_classes: int = 1000,
        train_samples: int = 4096,
        val_samples: int = 64,
        test_samples: int = 64,
        distinct: int = 256,
        data_seed: int = 0,
        **shared,
    ):
        super().__init__(val_fraction=None, test_fraction=None, **shared)
        self.image_size = _positive("data.image_size", image_size)
        self.channels = _positive("data.channels", channels)
        self.num_classes = _positive("data.num_classes", num_classes)
        self.distinct = _positive("data.distinct", distinct)
        self.data_seed = data_seed
        self.samples = _split_sizes(train_samples, val_samples, test_samples)

    @property
    def shapes(self) -> dict[str, int]:
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "num_outputs": self.num_classes,
            "num_features": self.channels * self.image_size**2,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (
                RandomImages(self.samples[split], self.distinct, self.channels, self.image_size, self.num_classes, _generator(self.data_seed, split))
                for split in SPLIT_STREAMS
            )
