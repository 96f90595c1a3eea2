"""In-memory datasets hand the DataLoader whole batches (dtrain/data/batched.py): the same values,
dtypes and shapes as torch's per-sample fetch and collate."""

import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

from dtrain.data.batched import BatchedTensorDataset, CollatedBatch, batched, collate
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


def test_each_in_memory_dataset_gathers_a_batch_as_the_samples_would_stack():
    indices = [5, 0, 17, 3, 3, 9]
    tensors = TensorDataset(torch.randn(20, 4, 2), torch.randint(0, 5, (20,)))
    blocks = TokenBlocks(torch.randint(0, 256, (500,)), block_size=16)
    windows = Windows(torch.randn(300), targets=range(40, 120), window=12, horizon=3)
    tokens = RandomTokens(30, block_size=8, vocab_size=50, generator=torch.Generator().manual_seed(0))
    images = RandomImages(30, distinct=7, channels=3, image_size=4, num_classes=5, generator=torch.Generator().manual_seed(0))
    for dataset in (BatchedTensorDataset(*tensors.tensors), blocks, windows, tokens, images):
        batch = dataset.__getitems__(indices)
        assert isinstance(batch, CollatedBatch)
        assert_same(collate(batch), per_sample(dataset, indices))


def test_a_loader_over_a_plain_tensor_dataset_fetches_whole_batches_with_the_same_values():
    dataset = TensorDataset(torch.arange(40.0).reshape(20, 2), torch.arange(20))
    fast = DataLoader(batched(dataset), batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(3), collate_fn=collate)
    slow = DataLoader(dataset, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert isinstance(fast.dataset, BatchedTensorDataset)
    for a, b in zip(fast, slow, strict=True):
        assert_same(a, b)
    assert collate([(torch.ones(2), 1), (torch.zeros(2), 0)])[1].tolist() == [1, 0]  # other batches: torch's collate
