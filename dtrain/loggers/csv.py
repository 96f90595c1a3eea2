"""Lightning's CSVLogger, except that a resumed run appends to its metrics.csv instead of
deleting it (Lightning's writer removes an existing file when it starts), and drops the rows
the killed run wrote after the checkpoint it resumes from, which the resumed run writes again:
each step is recorded once."""

import csv
import os

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        # Rows earlier processes wrote (the run before a resume); the rows after them are this process's.
        self._inherited_rows = len(self._read()[1])

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

    def forget_steps_from(self, step: int) -> None:
        """Drop the rows earlier processes wrote at `step` or later; header, other rows and this
        process's own rows stay. The file is replaced in one rename (a kill leaves old or new)."""
        header, rows = self._read()
        if "step" not in header or not self._inherited_rows:
            return
        column = header.index("step")
        inherited, own = rows[: self._inherited_rows], rows[self._inherited_rows :]
        kept = [row for row in inherited if not _at_or_after(row, column, step)]
        if len(kept) == len(inherited):
            return
        partial = f"{self.metrics_file_path}.tmp-{os.getpid()}"
        with open(partial, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(kept + own)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.metrics_file_path)
        self._inherited_rows = len(kept)

    def _read(self) -> tuple[list[str], list[list[str]]]:
        if not self._fs.isfile(self.metrics_file_path):
            return [], []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.reader(file)
            return next(reader, []), list(reader)


def _at_or_after(row: list[str], column: int, step: int) -> bool:
    try:
        return float(row[column]) >= step
    except (IndexError, ValueError):  # a row without a step: nothing says it came later
        return False


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def forget_steps_from(self, step: int) -> None:
        """A resumed run starts logging at `step`: the rows the run before it wrote from there on
        go (dtrain.callbacks.checkpoint.AtomicCheckpoint calls this when training resumes)."""
        self.save()  # this process's rows so far go to the file first, and stay
        self.experiment.forget_steps_from(step)
