"""Tables of numeric features: scikit-learn's bundled datasets by name, or a user's CSV file."""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import split_indices
from dtrain.data.user_files import read_numeric_csv

# Bundled with scikit-learn (no download): name -> (loader name, task).
BUNDLED = {
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "digits_flat": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


def load_csv(path: Path, target: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Numeric CSV with a header row; `target` names the label column (default: the last)."""
    columns, values = read_numeric_csv(path)
    target = target or columns[-1]
    if target not in columns:
        raise ConfigError("data.target", f"column {target!r} is not in {path} (columns: {', '.join(columns)})")
    column = columns.index(target)
    return np.delete(values, column, axis=1), values[:, column]


class TabularDataModule(DataModule):
    def __init__(
        self,
        dataset: str = "breast_cancer",
        path: str | None = None,
        target: str | None = None,
        task: str | None = None,
        split_seed: int = 0,
        val_fraction: float = 0.15,
        **shared,
    ):
        super().__init__(val_fraction=val_fraction, **shared)
        self.dataset, self.path, self.target = dataset, path, target
        self.split_seed = split_seed
        self._task = task
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            if self.path is not None:
                self._arrays = load_csv(Path(self.path), self.target)
            else:
                import sklearn.datasets

                if self.dataset not in BUNDLED:
                    raise ConfigError("data.dataset", f"unknown dataset {self.dataset!r}; choose one of {', '.join(BUNDLED)} or set data.path")
                bunch = getattr(sklearn.datasets, BUNDLED[self.dataset][0])()
                self._arrays = (bunch.data.astype(np.float64), bunch.target)
        return self._arrays

    @property
    def task(self) -> str:
        if self._task:
            return self._task
        if self.path is None:
            return BUNDLED[self.dataset][1]
        labels = self._load()[1]
        integral = np.all(labels == np.round(labels))
        return "classification" if integral and len(np.unique(labels)) <= 50 else "regression"

    @property
    def shapes(self) -> dict[str, int]:
        features, labels = self._load()
        shapes = {"num_features": features.shape[1]}
        if self.task == "classification":
            shapes["num_classes"] = int(labels.max()) + 1
            shapes["num_outputs"] = shapes["num_classes"]
        else:
            shapes["num_outputs"] = 1
        return shapes

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        features, labels = self._load()
        classification = self.task == "classification"
        if classification and (labels.min() < 0 or not np.all(labels == np.round(labels))):
            row = int(np.flatnonzero((labels < 0) | (labels != np.round(labels)))[0])
            raise ConfigError("data.target", f"class labels must be whole numbers from 0; data row {row + 1} has {labels[row]:g} "
                                             "(renumber the classes, or data.task=regression for a number to predict)")
        train, val, test = split_indices(
            len(labels), self.val_fraction, self.test_fraction, labels=labels if classification else None, seed=self.split_seed
        )
        mean, std = features[train].mean(0), features[train].std(0) + 1e-8
        x = torch.tensor((features - mean) / std, dtype=torch.float32)
        if classification:
            y = torch.tensor(labels, dtype=torch.long)
        else:
            self.target_mean, self.target_std = float(labels[train].mean()), float(labels[train].std())
            y = torch.tensor((labels - self.target_mean) / self.target_std, dtype=torch.float32).unsqueeze(1)
        self.train_set, self.val_set, self.test_set = (TensorDataset(x[i], y[i]) for i in (train, val, test))
