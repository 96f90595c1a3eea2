"""A distributed sampler whose order is a function of (seed, epoch) only and that can start mid-epoch."""

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler that, after `start_at`, skips the samples this rank already consumed.

    The order of an epoch never depends on the global RNG, so a resumed run sees exactly the
    samples an uninterrupted run would. The reported length stays the full epoch's, which keeps
    Lightning's batch counting (continued from the checkpoint) aligned with the data.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._skip = 0

    def start_at(self, epoch: int, samples_done: int) -> None:
        self.set_epoch(epoch)
        self._skip = samples_done

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0  # only the first iteration after a resume is shortened
        return iter(indices[skip:])
