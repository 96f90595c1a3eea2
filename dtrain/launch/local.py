"""Starts the other processes of a multi-process run on this machine.

Lightning's own re-launch re-runs the command line, which breaks Hydra multiruns (every rank
would start its own sweep). dtrain instead starts each extra rank as
`python -m dtrain.launch.rank <run dir>`, which runs the exact config this run saved. Lightning
then sees the ranks as launched externally, as under torchrun or srun.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from dtrain.config.errors import ConfigError
from dtrain.launch.dead_rank import RankDied, first_dead, how_it_ended, rank_died
from dtrain.launch.threads import SHARE_TAKEN

_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")


def launched_externally() -> bool:
    """True under torchrun, srun, Ray or dtrain's own launcher: someone else started the ranks."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return "LOCAL_RANK" in os.environ or SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def starts_own_processes(trainer: DictConfig) -> bool:
    """Strategies that fork or spawn their workers from inside fit() need no launcher."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        return any(word in strategy for word in ("spawn", "fork", "notebook"))
    return strategy.get("start_method", "popen") != "popen"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """Stop a rank of a run that has failed: SIGTERM, then SIGKILL if it is still there (a
    training rank takes SIGTERM as a request to checkpoint at its next step, which needs this
    rank; a hung one answers nothing)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _watch(procs: list[subprocess.Popen], stop: threading.Event) -> None:
    """If a rank dies, end the other extra ranks, which could wait for it in a collective. This
    process, rank 0, sees the death itself: its next collective fails (the dead rank's sockets
    are closed), and `_start_ranks` names the rank. (A SIGTERM to itself would end it without a
    word once training is over and its handlers are Python's defaults again.)"""
    while not stop.wait(1.0):
        if any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            return


@contextmanager
def run_threads() -> Iterator[None]:
    """Within this context every process the run starts (dtrain's ranks, the ones Lightning spawns
    or forks) computes with this process's thread count, the run's `runtime.threads`
    (dtrain.launch.threads applied it): Lightning's launchers keep an OMP_NUM_THREADS they find."""
    import torch

    from dtrain.launch.threads import release

    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    try:
        yield
    finally:
        release()  # the run's cores are free for the next dtrain run
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


@contextmanager
def local_ranks(trainer: DictConfig, processes: int, run_dir: Path) -> Iterator[None]:
    """Within this context this process is rank 0 of `processes` local ranks (if more than one)."""
    with run_threads():
        if processes <= 1 or starts_own_processes(trainer) or launched_externally():
            yield
        else:
            with _start_ranks(trainer, processes, run_dir):
                yield


@contextmanager
def _start_ranks(trainer: DictConfig, processes: int, run_dir: Path) -> Iterator[None]:
    if int(trainer.get("num_nodes", 1)) > 1:
        raise ConfigError("trainer.num_nodes", "several nodes need a cluster launcher: torchrun, srun (launcher=slurm) or Ray")
    import torch

    saved = {key: os.environ.get(key) for key in _DIST_ENV}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(processes), NODE_RANK="0", LOCAL_RANK="0")
    procs = [
        subprocess.Popen([sys.executable, "-m", "dtrain.launch.rank", str(run_dir)], env={**os.environ, "LOCAL_RANK": str(rank), SHARE_TAKEN: "1"})
        for rank in range(1, processes)
    ]
    stop = threading.Event()
    threading.Thread(target=_watch, args=(procs, stop), daemon=True).start()
    try:
        try:
            yield
        except BaseException as error:  # a peer's death shows here as a collective's error
            from dtrain.callbacks.stop_on_signal import StoppedBySignal

            stop.set()
            time.sleep(0.5)  # the dead rank's exit status, if that is what this was
            dead = first_dead(procs)
            if dead is not None and (isinstance(error, RankDied) or not isinstance(error, (ConfigError, StoppedBySignal))):  # its exit status says more
                rank, proc = dead
                raise rank_died(rank, proc.pid, how_it_ended(proc.returncode), run_dir) from None
            raise
        stop.set()
        deadline = time.monotonic() + 300
        for p in procs:
            if p.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                raise RuntimeError(f"rank process {p.pid} exited with code {p.returncode}")
    finally:
        stop.set()
        for p in procs:
            end(p)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
