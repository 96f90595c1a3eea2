"""A rank of a multi-process run that dies (killed, crashed in C code) ends the whole run in one
line naming it and the checkpoint to continue from, instead of the survivors' tracebacks from a
collective whose peer is gone (or a wait on it).

Ranks dtrain starts are watched by rank 0 (dtrain.launch.local), which knows their processes.
Under torchrun or srun the survivors learn of a death from the collective that fails ("Connection
reset by peer"); every rank notes its host and pid in `<run>/.ranks/` when it starts, so a
survivor can tell which rank on its node is gone.
"""

import os
import re
import signal
import socket
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
    return RankDied("trainer.devices", f"rank {rank} (pid {pid}) died, {how}; {_kept(run_dir)}; "
                                       f"continue with `python -m dtrain resume={run_dir}`")


RANKS_DIR = ".ranks"
# gloo's words when the other end of a collective's connection is gone
PEER_GONE = re.compile(r"(Connection reset by peer|Connection closed by peer|Broken pipe|Connection refused)")


def launched_by_cluster_launcher() -> bool:
    """torchrun or srun started this process (not dtrain: rank 0 watches the ranks it starts)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return TorchElasticEnvironment.detect() or SLURMEnvironment.detect()


def note_rank(run_dir: Path, rank: int) -> None:
    """Record this process as `rank` of the run (its host and pid), for a survivor to look up."""
    folder = Path(run_dir) / RANKS_DIR
    try:
        folder.mkdir(exist_ok=True)
        (folder / f"{rank}.pid").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    except OSError:  # only the message gets vaguer without it
        pass


def _gone(pid: int) -> bool:
    """The process has exited (a zombie its parent has not reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def dead_peers(run_dir: Path) -> list[tuple[int, int]]:
    """(rank, pid) of the run's ranks on this host whose processes are gone."""
    host, dead = socket.gethostname(), []
    for record in sorted((Path(run_dir) / RANKS_DIR).glob("*.pid")):
        try:
            their_host, pid = record.read_text().split()
            rank = int(record.stem)
        except (OSError, ValueError):
            continue
        if their_host == host and int(pid) != os.getpid() and _gone(int(pid)):
            dead.append((rank, int(pid)))
    return dead


def peer_died(error_text: str, run_dir: Path | None) -> RankDied | None:
    """The one-line error for a collective that failed because another rank is gone, else None."""
    found = PEER_GONE.search(error_text)
    if found is None or "gloo" not in error_text.lower() and "nccl" not in error_text.lower():
        return None
    if run_dir is None:
        return RankDied("trainer.devices", f"another rank of this run died ({found.group(1).lower()} in a collective)")
    dead = dead_peers(run_dir)
    for _ in range(20):  # its sockets close a moment before its process is gone
        if dead:
            break
        time.sleep(0.05)
        dead = dead_peers(run_dir)
    if dead:
        rank, pid = dead[0]
        return rank_died(rank, pid, "its process is gone", run_dir)
    return rank_died_elsewhere(f"{found.group(1).lower()} in a collective", run_dir)


def speaks_for_survivors(run_dir: Path, rank: int) -> bool:
    """Whether `rank` is the lowest-numbered rank still alive (ranks on other nodes taken for alive)."""
    dead = {r for r, _ in dead_peers(run_dir)}
    noted = {int(record.stem) for record in (Path(run_dir) / RANKS_DIR).glob("*.pid") if record.stem.isdigit()}
    return rank == min((noted | {rank}) - dead)


def rank_died_elsewhere(how: str, run_dir: Path) -> RankDied:
    """A peer died on another node (or its record is missing): the launcher's lines name it."""
    return RankDied("trainer.devices", f"another rank of this run died ({how}; on another node, or see the launcher's lines); "
                                       f"{_kept(run_dir)}; continue with `python -m dtrain resume={run_dir}`")


def _kept(run_dir: Path) -> str:
    from dtrain.checkpoints import newest_valid_checkpoint

    try:
        last = newest_valid_checkpoint(run_dir)
    except Exception:
        last = None
    return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"


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


def leave(code) -> None:
    """Exit with `code` now, past the interpreter's teardown: threads of torch's C++ side (gloo's,
    torch-DCP's) left to static destruction still abort a rank whose run succeeded ("terminate
    called without an active exception", exit -6; seen under fsdp after its group was closed)."""
    import logging

    logging.shutdown()  # the run's log file
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)

