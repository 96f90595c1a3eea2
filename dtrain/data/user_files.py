"""Reading a user's own data files strictly: a cell that is not a number, a file that is not an
image, a corpus that is not text end in one line naming the file and the place, never in a
silently wrong dataset (NaN for a typo) or a traceback from inside a DataLoader worker."""

from pathlib import Path

import numpy as np

from dtrain.config.errors import ConfigError
from dtrain.failures import BadSample


def read_numeric_csv(path: Path, key: str = "data.path") -> tuple[list[str], np.ndarray]:
    """The column names and the (rows, columns) float64 values of a CSV with a header row and
    a number in every cell."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as file:
        header = [name.strip() for name in next(csv.reader(file), [])]
    if not header:
        raise ConfigError(key, f"{path} is empty; give a CSV file with a header row and a number in every cell")
    try:  # numpy's C parser; the slow scan below only runs to name a bad cell
        values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2, encoding="utf-8")
    except ValueError:
        raise _first_bad_cell(path, header, key) from None
    if values.size == 0:
        raise ConfigError(key, f"{path} has a header row but no data rows")
    if values.shape[1] != len(header):
        raise ConfigError(key, f"{path} has {values.shape[1]} columns of numbers but {len(header)} names in its header row")
    return header, values


def _first_bad_cell(path: Path, header: list[str], key: str) -> ConfigError:
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if line == 1 or not row:
                continue
            if len(row) != len(header):
                return ConfigError(key, f"{path} line {line} has {len(row)} cells but the header row names {len(header)} columns")
            for name, cell in zip(header, row):
                try:
                    float(cell)
                except ValueError:
                    return ConfigError(key, f"{path} line {line}, column {name!r}: {cell!r} is not a number; "
                                            "every cell must be one (encode categories as numbers, fill missing values)")
    return ConfigError(key, f"{path} could not be read as a CSV of numbers")


def check_text(corpus: bytes, path: Path, key: str = "data.path") -> None:
    """A corpus for a language model must be text: NUL bytes or mostly undecodable bytes mean a
    binary file (an archive, an image, a model) was picked up."""
    sample = corpus[: 1 << 20]
    if b"\x00" in sample or sample.decode("utf-8", errors="replace").count("\ufffd") > len(sample) // 100:
        raise ConfigError(key, f"{path} holds binary data, not text; give text files (data.pattern picks which files of a folder)")


def load_image(path: str):
    """torchvision's image loader, with a file it cannot decode named in a one-line error."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated data, bad headers
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadSample("data.path", f"{path} cannot be read as an image ({reason}); remove or replace the file") from None
