"""The datamodule base: global batch split over ranks, reproducible order, resumable position."""

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.sampler import ResumableSampler
from dtrain.parallel.mesh import data_parallel_size_and_rank


def per_device_batch(global_batch: int, data_parallel_size: int, accumulation: int) -> int:
    """The batch each rank loads per micro-step; an error if the global batch does not split."""
    per_device, remainder = divmod(global_batch, data_parallel_size * accumulation)
    if remainder or per_device == 0:
        raise ConfigError(
            "data.batch_size",
            f"the global batch {global_batch} does not split over {data_parallel_size} data-parallel "
            f"rank(s) x {accumulation} accumulation step(s); use a multiple of {data_parallel_size * accumulation}",
        )
    return per_device


def pins_memory(trainer) -> bool:
    """Page-locked batches for a CUDA device: the copy to the GPU is faster and can overlap."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    return trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)


class DataModule(L.LightningDataModule):
    """Subclasses set `train_set`, `val_set`, `test_set` in `setup` and describe `shapes`.

    `batch_size` is the global batch: each data-parallel rank loads
    batch_size / data-parallel size / gradient accumulation samples per step, so a result does
    not change when the number of devices does.
    """

    def __init__(self, batch_size: int, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._resume_at: tuple[int, int] | None = None

    @property
    def shapes(self) -> dict[str, int]:
        """What a net needs to know about the data (num_classes, in_channels, vocab_size, ...)."""
        raise NotImplementedError

    @property
    def baselines(self) -> dict[str, float]:
        """Reference scores a trained model must beat (e.g. the unigram entropy of a corpus)."""
        return {}

    # -- loaders ---------------------------------------------------------------------------
    def per_device_batch_size(self) -> int:
        dp_size, _ = data_parallel_size_and_rank(self.trainer)
        return per_device_batch(self.batch_size, dp_size, self.trainer.accumulate_grad_batches)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, shuffle=True, drop_last=True)
        if self._resume_at is not None:
            epoch, samples_done = self._resume_at
            # Data-parallel ranks take interleaved slots of one global order, so the first
            # `samples_done` slots are done whatever the number of ranks now.
            loader.sampler.start_at(epoch, samples_done // loader.sampler.num_replicas)
            self._resume_at = None
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, drop_last=False)

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        dp_size, dp_rank = data_parallel_size_and_rank(self.trainer)
        sampler = ResumableSampler(dataset, num_replicas=dp_size, rank=dp_rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size(),
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pins_memory(self.trainer),
            collate_fn=getattr(self, "collate_fn", None),
        )

    # -- position in the epoch, saved in every checkpoint ----------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        epoch = trainer.current_epoch
        batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if batches_done >= trainer.num_training_batches:
            epoch, batches_done = epoch + 1, 0
        dp_size, _ = data_parallel_size_and_rank(trainer)
        return {"epoch": epoch, "samples_done": batches_done * self.per_device_batch_size() * dp_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._resume_at = (state["epoch"], state["samples_done"])
