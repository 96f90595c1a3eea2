"""scikit-learn's handwritten digits (1,797 real 8x8 images, shipped with the package): as images,
or each image read row by row as a sequence (`data=sequences`)."""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import split_indices


class DigitsDataModule(DataModule):
    """The digits as (1, image_size, image_size) images in [-1, 1], split stratified by digit."""

    def __init__(self, image_size: int = 8, holdout_class: int | None = None, **shared):
        """`holdout_class` keeps one digit out of the training split only (validation and test
        keep it): the anomaly an autoencoder trained on the other nine digits should flag."""
        super().__init__(**shared)
        if holdout_class is not None and not 0 <= holdout_class < 10:
            raise ConfigError("data.holdout_class", f"must be a digit 0-9 or null, got {holdout_class}")
        self.holdout_class = holdout_class
        self.image_size = image_size

    @property
    def shapes(self) -> dict[str, int]:
        return {
            "in_channels": 1,
            "image_size": self.image_size,
            "num_classes": 10,
            "num_outputs": 10,
            "num_features": self.image_size**2,
        }

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """What a net sees of the (n, 8, 8) images in [0, 1]."""
        images = pixels.unsqueeze(1)
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        return (images - 0.5) / 0.5  # [-1, 1], what generative nets with tanh outputs expect

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        inputs = self.inputs(torch.tensor(digits.images, dtype=torch.float32) / 16.0)
        labels = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = split_indices(len(labels), self.val_fraction, self.test_fraction, labels=digits.target)
        if self.holdout_class is not None:
            train = train[digits.target[train] != self.holdout_class]
        self.train_set, self.val_set, self.test_set = (TensorDataset(inputs[idx], labels[idx]) for idx in (train, val, test))


class DigitRowsDataModule(DigitsDataModule):
    """Sequence classification: each digit read top to bottom as 8 steps of 8 features in [0, 1]
    (the small cousin of sequential MNIST), the same splits as the images."""

    def __init__(self, dataset: str = "digits_rows", **shared):
        super().__init__(image_size=8, holdout_class=None, **shared)
        if dataset != "digits_rows":
            raise ConfigError("data.dataset", f"unknown sequence dataset {dataset!r}; choose digits_rows")
        self.dataset = dataset

    @property
    def shapes(self) -> dict[str, int]:
        return {"num_features": 8, "seq_len": 8, "num_classes": 10, "num_outputs": 10}

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels  # (n, 8 rows, 8 columns)
