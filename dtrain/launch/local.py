"""Starts the other processes of a multi-process run on this machine.

Lightning's own re-launch re-runs the command line, which breaks Hydra multiruns (every rank
would start its own sweep). dtrain instead starts each extra rank as
`python -m dtrain.launch.rank <run dir>`, which runs the exact config this run saved. Lightning
then sees the ranks as launched externally, as under torchrun or srun.
"""

import os
import signal
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

_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "OMP_NUM_THREADS")


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


def _watch(procs: list[subprocess.Popen], stop: threading.Event) -> None:
    """If a rank dies, the others would wait for it forever in a collective: end them all."""
    while not stop.wait(1.0):
        if any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextmanager
def local_ranks(trainer: DictConfig, processes: int, run_dir: Path) -> Iterator[None]:
    """Within this context this process is rank 0 of `processes` local ranks (if more than one)."""
    if processes <= 1 or starts_own_processes(trainer) or launched_externally():
        yield
        return
    if int(trainer.get("num_nodes", 1)) > 1:
        raise ConfigError("trainer.num_nodes", "several nodes need a cluster launcher: torchrun, srun (launcher=slurm) or Ray")
    import torch

    saved = {key: os.environ.get(key) for key in _DIST_ENV}
    saved_threads = torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // processes)  # ranks sharing the cores must not oversubscribe them
    torch.set_num_threads(threads)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(processes), NODE_RANK="0",
        LOCAL_RANK="0", OMP_NUM_THREADS=str(threads),
    )
    procs = [
        subprocess.Popen([sys.executable, "-m", "dtrain.launch.rank", str(run_dir)], env={**os.environ, "LOCAL_RANK": str(rank)})
        for rank in range(1, processes)
    ]
    stop = threading.Event()
    threading.Thread(target=_watch, args=(procs, stop), daemon=True).start()
    try:
        yield
        stop.set()
        deadline = time.monotonic() + 300
        for p in procs:
            if p.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                raise RuntimeError(f"rank process {p.pid} exited with code {p.returncode}")
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        torch.set_num_threads(saved_threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
