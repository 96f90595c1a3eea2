"""scikit-learn's handwritten digits (1,797 real 8x8 images, shipped with the package) as images."""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import split_indices


class DigitsDataModule(DataModule):
    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 8,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        seed: int = 0,
        holdout_class: int | None = None,
    ):
        """`holdout_class` keeps one digit out of the training split only (validation and test
        keep it): the anomaly an autoencoder trained on the other nine digits should flag."""
        super().__init__(batch_size, num_workers, seed)
        if holdout_class is not None and not 0 <= holdout_class < 10:
            raise ConfigError("data.holdout_class", f"must be a digit 0-9 or null, got {holdout_class}")
        self.holdout_class = holdout_class
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    @property
    def shapes(self) -> dict[str, int]:
        return {
            "in_channels": 1,
            "image_size": self.image_size,
            "num_classes": 10,
            "num_outputs": 10,
            "num_features": self.image_size**2,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - 0.5) / 0.5  # [-1, 1], what generative nets with tanh outputs expect
        labels = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = split_indices(len(labels), self.val_fraction, self.test_fraction, labels=digits.target)
        if self.holdout_class is not None:
            train = train[digits.target[train] != self.holdout_class]
        self.train_set, self.val_set, self.test_set = (
            TensorDataset(images[idx], labels[idx]) for idx in (train, val, test)
        )
