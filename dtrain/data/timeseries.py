"""A real series cut into windows for forecasting (labelled sequences: dtrain.data.digits.DigitRowsDataModule)."""

import numpy as np
import torch
from torch.utils.data import Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.batched import window_index
from dtrain.data.splits import in_order
from dtrain.data.user_files import read_numeric_csv
from dtrain.extras import require


def load_series(dataset: str, path: str | None, column: str | None) -> np.ndarray:
    """A 1-D float series: a statsmodels dataset by name (bundled, no download) or a CSV column."""
    if path is not None:
        columns, values = read_numeric_csv(path)
        column = column or columns[-1]
        if column not in columns:
            raise ConfigError("data.column", f"column {column!r} is not in {path} (columns: {', '.join(columns)})")
        return values[:, columns.index(column)]
    bundled = {"sunspots": ("sunspots", "SUNACTIVITY"), "nile": ("nile", "volume"), "co2": ("co2", "co2")}
    if dataset not in bundled:
        raise ConfigError("data.dataset", f"unknown series {dataset!r}; choose one of {', '.join(bundled)} or set data.path")
    require("timeseries", "statsmodels", f"data.dataset={dataset}")
    import statsmodels.datasets

    module, default_column = bundled[dataset]
    frame = getattr(statsmodels.datasets, module).load_pandas().data
    values = frame[column or default_column].to_numpy(dtype=np.float64)
    return values[~np.isnan(values)]


class Windows(Dataset):
    """(window, 1) inputs and the next `horizon`-th value, for every target index in `targets`."""

    def __init__(self, series: torch.Tensor, targets: range, window: int, horizon: int):
        self.series, self.targets, self.window, self.horizon = series, targets, window, horizon

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        t = self.targets[i]
        start = t - self.horizon + 1 - self.window
        return self.series[start : start + self.window].unsqueeze(-1), self.series[t : t + 1]

    def gather(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `indices`, stacked (dtrain.data.batched)."""
        targets = torch.as_tensor([self.targets[i] for i in indices])
        inputs = self.series[window_index(targets - self.horizon + 1 - self.window, self.window)]
        return inputs.unsqueeze(-1), self.series[targets].unsqueeze(-1)


class TimeSeriesDataModule(DataModule):
    """Forecast a series `horizon` steps past a `window` of its past values.

    The split is chronological (train, then validation, then test); values are standardised
    with the training part's mean and deviation, and metrics are in those units. The baseline
    is the naive forecast (the last value in the window) on the test split.
    """

    def __init__(
        self,
        dataset: str = "sunspots",
        path: str | None = None,
        column: str | None = None,
        window: int = 24,
        horizon: int = 1,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        **shared,
    ):
        super().__init__(batch_size, val_fraction=val_fraction, test_fraction=test_fraction, **shared)
        self.dataset, self.path, self.column = dataset, path, column
        self.window, self.horizon = window, horizon
        self._series: torch.Tensor | None = None

    @property
    def series(self) -> torch.Tensor:
        if self._series is None:
            values = load_series(self.dataset, self.path, self.column)
            n_train = self._bounds(len(values))[0]
            if n_train <= self.window + self.horizon:
                raise ConfigError("data.window", f"the training part holds {n_train} values, too few for window={self.window}; use a smaller window")
            train = values[:n_train]
            self._series = torch.tensor((values - train.mean()) / train.std(), dtype=torch.float32)
        return self._series

    def _bounds(self, n: int) -> tuple[int, int]:
        return in_order(n, self.val_fraction, self.test_fraction)

    def _targets(self) -> tuple[range, range, range]:
        n = len(self.series)
        train_end, val_end = self._bounds(n)
        first = self.window + self.horizon - 1
        return range(first, train_end), range(train_end, val_end), range(val_end, n)

    @property
    def shapes(self) -> dict[str, int]:
        return {"num_features": 1, "num_outputs": 1, "window": self.window}

    @property
    def baselines(self) -> dict[str, float]:
        test = torch.tensor(list(self._targets()[2]))
        errors = self.series[test] - self.series[test - self.horizon]
        return {"naive_mse": float(errors.pow(2).mean()), "naive_mae": float(errors.abs().mean())}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (
                Windows(self.series, targets, self.window, self.horizon) for targets in self._targets()
            )

