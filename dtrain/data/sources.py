"""The text files a text datamodule reads: a user's folder, or the Python standard library's sources."""

import sysconfig
from pathlib import Path


def stdlib_dir() -> Path:
    """Every Python install has its standard library's source files: the default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(folder: Path, pattern: str, skip: frozenset[str] = frozenset()) -> list[Path]:
    """The files under `folder` matching `pattern`, sorted (a corpus is reproducible), leaving out
    those inside a sub-folder named in `skip` (tests, caches, vendored packages)."""
    return sorted(f for f in folder.rglob(pattern) if f.is_file() and not skip.intersection(f.relative_to(folder).parts[:-1]))
