"""torchvision's labelled image datasets (MNIST, CIFAR10, ...) read from files already on disk; never downloaded."""

import difflib
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import carve

# name -> (native channels, native image size, number of classes); all have an official
# train and test split with a class label per image.
SUPPORTED = {
    "MNIST": (1, 28, 10),
    "FashionMNIST": (1, 28, 10),
    "KMNIST": (1, 28, 10),
    "CIFAR10": (3, 32, 10),
    "CIFAR100": (3, 32, 100),
    "SVHN": (3, 32, 10),
    "STL10": (3, 96, 10),
}
# How each family names its splits in the constructor.
_SPLIT_BY_NAME = {"SVHN", "STL10"}  # split="train" / "test"; the others take train=True / False


def expected_files(name: str) -> list[str]:
    """The files (relative to root) torchvision reads for `name` without downloading, from the
    class's own file lists, so they follow the installed torchvision."""
    from torchvision import datasets

    cls = getattr(datasets, name)
    if issubclass(cls, datasets.MNIST):
        return [f"{name}/raw/{os.path.splitext(os.path.basename(url))[0]}" for url, _ in cls.resources]
    if name == "SVHN":
        return [cls.split_list[split][1] for split in ("train", "test")]
    files = [file for file, _ in cls.train_list + cls.test_list]
    files.append(cls.meta["filename"] if hasattr(cls, "meta") else cls.class_names_file)
    return [f"{cls.base_folder}/{file}" for file in files]


class TorchvisionDataModule(DataModule):
    """A torchvision dataset: val carved (stratified, fixed seed) from the official train split,
    the official test split as test; images scaled to [-1, 1] at `image_size`, `channels` 1 or 3
    (null: the dataset's own)."""

    def __init__(
        self,
        name: str = "MNIST",
        root: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        val_fraction: float = 0.1,
        **shared,
    ):
        if not 0 < val_fraction < 1:
            raise ConfigError("data.val_fraction", f"must be between 0 and 1 (the part of the official train split kept for validation), got {val_fraction}")
        super().__init__(val_fraction=val_fraction, test_fraction=None, **shared)  # the official test split is the test set
        self.name = check_name(name)
        native_channels, native_size, self.num_classes = SUPPORTED[self.name]
        self.native_channels = native_channels
        self.channels = channels or native_channels
        self.image_size = image_size or native_size
        if self.channels not in (1, 3):
            raise ConfigError("data.channels", f"must be 1 (grey), 3 (RGB) or null ({self.name}'s own: {native_channels}), got {channels}")
        if self.image_size < 1:
            raise ConfigError("data.image_size", f"must be a positive number of pixels or null ({self.name}'s own: {native_size})")
        self.root = check_root(self.name, root)

    @property
    def shapes(self) -> dict[str, int]:
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "num_outputs": self.num_classes,
            "num_features": self.channels * self.image_size**2,
        }

    def _dataset(self, train: bool):
        from torchvision import datasets, transforms

        steps = []
        if self.channels == 1 or self.native_channels == 1:
            steps.append(transforms.Grayscale(self.channels))
        if self.image_size != SUPPORTED[self.name][1]:
            steps += [transforms.Resize(self.image_size), transforms.CenterCrop(self.image_size)]
        steps += [transforms.ToTensor(), transforms.Normalize([0.5] * self.channels, [0.5] * self.channels)]
        split = {"split": "train" if train else "test"} if self.name in _SPLIT_BY_NAME else {"train": train}
        try:
            return getattr(datasets, self.name)(str(self.root), transform=transforms.Compose(steps), download=False, **split)
        except Exception as error:  # the user's files: missing pieces, another version, corrupted
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                "data.root", f"torchvision cannot read {self.name} under {self.root} ({message}); dtrain never "
                f"downloads: replace the files with torchvision's originals ({', '.join(expected_files(self.name))})"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = self._dataset(train=True)
        labels = np.asarray(train.targets if hasattr(train, "targets") else train.labels)
        keep, val = carve(np.arange(len(labels)), self.val_fraction, labels)
        self.train_set, self.val_set, self.test_set = Subset(train, keep), Subset(train, val), self._dataset(train=False)


def check_name(name: str) -> str:
    """The dataset's torchvision class name, or a one-line error that lists the supported ones."""
    from torchvision import datasets

    supported = ", ".join(SUPPORTED)
    if name in SUPPORTED:
        return name
    if isinstance(name, str) and isinstance(getattr(datasets, name, None), type):
        raise ConfigError("data.name", f"torchvision.datasets.{name} has no official train/test split with a class label per image; choose one of: {supported}")
    hint = difflib.get_close_matches(str(name).lower(), [s.lower() for s in SUPPORTED], n=1)
    did_you_mean = f"did you mean {next(s for s in SUPPORTED if s.lower() == hint[0])}? " if hint else ""
    raise ConfigError("data.name", f"{name} is not a torchvision dataset dtrain supports; {did_you_mean}choose one of: {supported}")


def check_root(name: str, root: str | None) -> Path:
    """The folder that already holds the dataset's files; dtrain never downloads them."""
    first = expected_files(name)[0]
    if root is None:
        raise ConfigError("data.root", f"required: the folder torchvision keeps {name} in (the one holding {first}), e.g. data.root=$HOME/data")
    root_path = Path(root).expanduser()
    if name in ("MNIST", "FashionMNIST", "KMNIST"):  # torchvision also reads its old processed/ files
        legacy = [root_path / name / "processed" / file for file in ("training.pt", "test.pt")]
        if all(path.is_file() for path in legacy):
            return root_path
    missing = [file for file in expected_files(name) if not (root_path / file).is_file()]
    if missing:
        shown = ", ".join(str(root_path / file) for file in missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        raise ConfigError(
            "data.root", f"{name} files missing: {shown}; dtrain never downloads: copy torchvision's {name} files "
            f"there (e.g. from torchvision.datasets.{name}(root, download=True) run where there is internet) or fix data.root"
        )
    return root_path
