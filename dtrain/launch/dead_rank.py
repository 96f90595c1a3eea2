"""A rank of a local multi-process run that dies (killed, crashed in C code) ends the whole run
in one line naming it and the checkpoint to continue from, instead of the survivors' tracebacks
from a collective whose peer is gone (or a wait on it)."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

from dtrain.config.errors import ConfigError


class RankDied(ConfigError):
    """Another rank of this run is gone."""


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def rank_died(rank: int, pid: int, how: str, run_dir: Path) -> RankDied:
    from dtrain.checkpoints import newest_valid_checkpoint

    try:
        last = newest_valid_checkpoint(run_dir)
    except Exception:
        last = None
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return RankDied("trainer.devices", f"rank {rank} (pid {pid}) died, {how}; {kept}; "
                                       f"continue with `python -m dtrain resume={run_dir}`")


def first_dead(procs: list, first_rank: int = 1) -> tuple[int, object] | None:
    """(rank, process) of the first child rank that ended with a failure, if any."""
    for rank, proc in enumerate(procs, start=first_rank):
        if proc.poll() not in (None, 0):
            return rank, proc
    return None


def watch_parent(run_dir: Path, poll_s: float = 1.0) -> int:
    """In an extra rank: when rank 0 (the process that started this one) is gone, say so once
    and leave at once; the collectives this rank waits in would otherwise fail with a traceback
    or wait out their timeout. Returns rank 0's pid, for `leave_if_parent_gone`."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            leave_if_parent_gone(parent, run_dir)

    threading.Thread(target=watch, name="dtrain-watch-rank0", daemon=True).start()
    return parent


_leaving = threading.Lock()


def leave_if_parent_gone(parent: int, run_dir: Path) -> None:
    """One line and an immediate exit (status 1) if rank 0 is gone; otherwise nothing."""
    if os.getppid() == parent or not _leaving.acquire(blocking=False):
        return
    print(f"dtrain: error: {rank_died(0, parent, 'its process is gone', run_dir)}", file=sys.stderr, flush=True)
    os._exit(1)
