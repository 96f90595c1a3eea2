"""Whole batches of in-memory tensors in one indexing operation, in dtrain's own loaders.

torch's DataLoader fetches a batch one `__getitem__` per sample and then stacks the samples
(128 Python calls and a copy per tensor for a batch of 128). It asks a dataset that defines
`__getitems__(indices)` for the whole batch at once instead (in worker processes too). dtrain's
datamodules wrap the datasets that can gather a batch (`Batched`: a plain TensorDataset, or one
with a `gather(indices)` method, as the text blocks, series windows and generated data have)
so that `__getitems__` answers with one gather per tensor, marked `CollatedBatch`, which
`collate` passes through. The datasets themselves keep torch's per-sample protocol, so a plain
DataLoader over them works as usual. Values are identical to the per-sample path's.
"""

import torch
from torch.utils.data import Dataset, TensorDataset, default_collate


class CollatedBatch(list):
    """A batch gathered whole: already collated."""


def collate(items):
    """The DataLoader's collate_fn: a CollatedBatch as it is, anything else as torch collates it."""
    if isinstance(items, CollatedBatch):
        return list(items)
    return default_collate(items)


class Batched(Dataset):
    """`dataset` as dtrain's loaders fetch it: a whole batch per index list."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> CollatedBatch:
        if hasattr(self.dataset, "gather"):
            return CollatedBatch(self.dataset.gather(indices))
        index = torch.as_tensor(indices)
        return CollatedBatch(tensor[index] for tensor in self.dataset.tensors)


def batched(dataset: Dataset) -> Dataset:
    """`dataset`, fetched a batch at a time where it can gather one (see the module docstring)."""
    if hasattr(dataset, "gather") or type(dataset) is TensorDataset:
        return Batched(dataset)
    return dataset


def window_index(starts: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, length) positions of the windows beginning at `starts`."""
    return starts.unsqueeze(1) + torch.arange(length)
