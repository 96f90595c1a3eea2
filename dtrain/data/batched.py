"""Whole batches of in-memory tensors in one indexing operation.

torch's DataLoader fetches a batch one `__getitem__` per sample and then stacks the samples
(128 Python calls and a copy per tensor for a batch of 128). A dataset that defines
`__getitems__(indices)` is asked for the whole batch at once instead (torch's fetcher does this,
in worker processes too); the datasets here answer with one advanced-indexing gather per tensor,
marked `CollatedBatch`, which `collate` passes through as the batch. Values are identical to the
per-sample path's, so splits, orders and resumed runs do not change.
"""

import torch
from torch.utils.data import TensorDataset, default_collate


class CollatedBatch(list):
    """A batch a dataset built whole in `__getitems__`: already collated."""


def collate(items):
    """The DataLoader's collate_fn: a CollatedBatch as it is, anything else as torch collates it."""
    if isinstance(items, CollatedBatch):
        return list(items)
    return default_collate(items)


class BatchedTensorDataset(TensorDataset):
    """A TensorDataset that gathers a batch with one index per tensor."""

    def __getitems__(self, indices: list[int]) -> CollatedBatch:
        index = torch.as_tensor(indices)
        return CollatedBatch(tensor[index] for tensor in self.tensors)


def batched(dataset):
    """`dataset`, fetched whole batches at a time where it is a plain TensorDataset."""
    if type(dataset) is TensorDataset:
        return BatchedTensorDataset(*dataset.tensors)
    return dataset


def window_index(starts: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, length) positions of the windows beginning at `starts`."""
    return starts.unsqueeze(1) + torch.arange(length)
