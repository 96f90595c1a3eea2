"""A user's images in class folders (torchvision ImageFolder: <path>/<class>/<image>), resized."""

from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import split_indices
from dtrain.data.user_files import load_image


class ImageFolderDataModule(DataModule):
    """Images scaled to [-1, 1] at `image_size` x `image_size`, `channels` 1 (grey) or 3 (RGB).

    If `path` has `train/` (and optionally `val/`, `test/`) subfolders those are the splits;
    otherwise one folder of class folders is split (stratified) by the fractions.
    """

    def __init__(
        self,
        path: str,
        image_size: int = 32,
        channels: int = 3,
        **shared,
    ):
        super().__init__(**shared)
        if path is None or not Path(path).is_dir():
            raise ConfigError("data.path", f"{path} is not a folder; point data.path at a folder of class folders of images")
        if channels not in (1, 3):
            raise ConfigError("data.channels", f"must be 1 (grey) or 3 (RGB), got {channels}")
        self.path, self.image_size, self.channels = Path(path), image_size, channels
        self.classes = self._folder(self._roots()[0]).classes  # shapes are known before setup

    def _roots(self) -> list[Path]:
        split_root = self.path / "train"
        return [split_root, self.path / "val", self.path / "test"] if split_root.is_dir() else [self.path]

    def _folder(self, root: Path):
        from torchvision import datasets, transforms

        transform = transforms.Compose(
            [
                transforms.Grayscale(1) if self.channels == 1 else transforms.Lambda(lambda image: image.convert("RGB")),
                transforms.Resize(self.image_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
                transforms.Normalize([0.5] * self.channels, [0.5] * self.channels),
            ]
        )
        try:
            return datasets.ImageFolder(root, transform=transform, loader=load_image)
        except (FileNotFoundError, RuntimeError) as error:
            raise ConfigError("data.path", f"{root}: {error}") from None

    @property
    def shapes(self) -> dict[str, int]:
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": len(self.classes),
            "num_outputs": len(self.classes),
            "num_features": self.channels * self.image_size**2,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, *given = [self._folder(root) if root.is_dir() else None for root in self._roots()]
        val, test = given or (None, None)
        if val is None or test is None:  # carve the missing splits out of the training images
            labels = np.asarray(train.targets)
            train_idx, val_idx, test_idx = split_indices(len(labels), self.val_fraction, self.test_fraction, labels=labels)
            train, val, test = Subset(train, train_idx), val or Subset(train, val_idx), test or Subset(train, test_idx)
        self.train_set, self.val_set, self.test_set = train, val, test
