"""A one-node-machine Slurm cluster for tests (module fixture), job polling, and a callback that slows a run down."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def cluster_or_skip():
    """Why this machine cannot run a local cluster, or None: skip with that reason, or fail
    where CI requires Slurm (DTRAIN_REQUIRE_SLURM=1)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    reason = None
    if os.geteuid() != 0:
        reason = "a local Slurm cluster needs root (munged, slurmd run as root here)"
    elif missing:
        reason = f"Slurm is not installed ({', '.join(missing)} missing; scripts/setup.sh test installs it as root)"
    if reason and os.environ.get("DTRAIN_REQUIRE_SLURM") == "1":
        pytest.fail(f"DTRAIN_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


class Cluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {"SLURM_CONF": str(folder / "slurm.conf")}

    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env={**os.environ, **self.env, **kwargs.pop("env", {})}, capture_output=True, text=True, timeout=120, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done

    def job(self, job_id: str) -> dict[str, str]:
        shown = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", shown))

    def wait(self, job_id: str, timeout: float = 240) -> dict[str, str]:
        """The job's record once it has finished (not merely been requeued)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["JobState"] in FINISHED:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['JobState']} after {timeout} s"
            time.sleep(0.5)


def start_cluster(folder: Path) -> Cluster:
    subprocess.run([str(REPO / "slurm/local/start.sh"), str(folder)], check=True, capture_output=True, text=True, timeout=120)
    return Cluster(folder)


def stop_cluster(folder: Path) -> None:
    subprocess.run([str(REPO / "slurm/local/stop.sh"), str(folder)], timeout=120)


class SlowAfterStep(Callback):
    """From global step `step` on, until the job is requeued, sleep `seconds` after each batch and
    leave `<run dir>/reached`, so a test can signal a job mid-run. It changes no number the run computes."""

    def __init__(self, step: int, seconds: float):
        self.step, self.seconds = step, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            if trainer.is_global_zero:
                (Path(trainer.default_root_dir) / "reached").touch()
            time.sleep(self.seconds)
