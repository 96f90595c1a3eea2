"""The dtrain runs on this machine and the cores each took: a file per running process in one
machine-wide folder, read and written under a lock, so that runs started side by side split the
cores between them instead of each taking them all (dtrain.launch.threads asks it).

A run first announces itself (its cores, its thread count not decided yet), then decides, so that
runs started together see each other; an entry whose process has ended is dropped when read.
"""

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Machine-wide, for every user and project (paths.cache_dir differs between them).
FOLDER = Path(tempfile.gettempdir()) / "dtrain-core-shares"


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot): a reused pid is another process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def _locked() -> Iterator[None]:
    if not FOLDER.is_dir():
        FOLDER.mkdir(parents=True, exist_ok=True)
        os.chmod(FOLDER, 0o1777)  # like /tmp: every user's runs take part, each removes only its own file
    with open(FOLDER / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _own_file() -> Path:
    return FOLDER / f"{os.getpid()}.json"


def _write(cores: set[int], threads: int | None) -> None:
    tmp = FOLDER / f".{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "started": _started(os.getpid()), "cores": sorted(cores), "threads": threads}))
    tmp.replace(_own_file())


def _others(cores: set[int]) -> list[dict]:
    """The other running dtrain processes whose cores overlap `cores`."""
    found = []
    for path in FOLDER.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("pid") == os.getpid():
            continue
        if _started(entry.get("pid", -1)) != entry.get("started"):
            path.unlink(missing_ok=True)  # its process has ended
            continue
        if set(entry.get("cores", ())) & cores:
            found.append(entry)
    return found


def announce(cores: set[int]) -> None:
    """This process starts a run on `cores`; its thread count is still to be decided."""
    try:
        with _locked():
            _write(cores, None)
    except OSError:
        pass  # no shared folder to write: the run takes its allotment alone


def take(cores: set[int], wanted: int) -> tuple[int, int]:
    """Threads for this run (all its processes here together): at most `wanted`, and no more than
    the cores other runs have not taken, shared with those still deciding. Returns the count
    and how many other runs share these cores."""
    try:
        with _locked():
            others = _others(cores)
            taken = sum(entry["threads"] for entry in others if entry.get("threads"))
            deciding = sum(1 for entry in others if not entry.get("threads"))
            threads = max(1, min(wanted, (len(cores) - taken) // (1 + deciding)))
            _write(cores, threads)
    except OSError:
        return wanted, 0
    return threads, len(others)


def withdraw() -> None:
    """This process's run has ended: its cores are free for the next run."""
    try:
        _own_file().unlink(missing_ok=True)
    except OSError:
        pass
