"""Lightning's CSVLogger, except that a resumed run appends to its metrics.csv instead of
deleting it (Lightning's writer removes an existing file when it starts)."""

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def save(self) -> None:
        # Continue the columns already in the file, whoever wrote them (the run before a resume,
        # or the fit processes of a spawn strategy); new columns merge into the header.
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = header + sorted(set(self.metrics_keys) - set(header))
        super().save()

    def _check_log_dir_exists(self) -> None:
        pass  # keep the rows of the run before the resume; new columns merge into the header


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
