"""dtrain's loaders fetch in-memory datasets a whole batch at a time (dtrain/data/batched.py):
the same values, dtypes and shapes as torch's per-sample fetch and collate; a plain DataLoader
over the same datasets still fetches them sample by sample."""

import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

from dtrain.data.batched import Batched, CollatedBatch, batched, collate
from dtrain.data.generated import RandomImages, RandomTokens
from dtrain.data.text import TokenBlocks
from dtrain.data.timeseries import Windows


def per_sample(dataset, indices):
    return default_collate([dataset[i] for i in indices])


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape and x.is_contiguous()
        assert torch.equal(x, y)


def datasets():
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    return [
        TensorDataset(torch.randn(20, 4, 2), torch.randint(0, 5, (20,))),
        TokenBlocks(torch.randint(0, 256, (500,)), block_size=16),
        Windows(torch.randn(300), targets=range(40, 120), window=12, horizon=3),
        RandomTokens(30, block_size=8, vocab_size=50, generator=generator()),
        RandomImages(30, distinct=7, channels=3, image_size=4, num_classes=5, generator=generator()),
    ]


def test_each_in_memory_dataset_gathers_a_batch_as_the_samples_would_stack():
    indices = [5, 0, 17, 3, 3, 9]
    for dataset in datasets():
        fast = batched(dataset)
        assert isinstance(fast, Batched)
        batch = fast.__getitems__(indices)
        assert isinstance(batch, CollatedBatch)
        assert_same(collate(batch), per_sample(dataset, indices))


def test_dtrains_loader_fetches_whole_batches_and_a_plain_loader_is_unchanged():
    for dataset in datasets():
        fast = DataLoader(batched(dataset), batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(3), collate_fn=collate)
        plain = DataLoader(dataset, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(3))
        for a, b in zip(fast, plain, strict=True):
            assert_same(a, b)
    assert collate([(torch.ones(2), 1), (torch.zeros(2), 0)])[1].tolist() == [1, 0]  # other batches: torch's collate
