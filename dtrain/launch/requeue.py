"""Slurm's notice (USR1) or time-limit SIGTERM: checkpoint at the next step boundary, requeue the job, exit.

Lightning's own auto-requeue (SLURMEnvironment) saves from inside the signal handler, wherever
the step happens to be, bypasses SIGTERM (so a time limit requeues nothing) and leaves an HPC
checkpoint that later wins over newer ones. Here the handler only raises a flag; the
checkpoint is written where a step has completed (the point `last.ckpt` resumes from
bitwise), into the run's own checkpoints folder, and the restart picks the newest checkpoint
by global step (dtrain.checkpoints).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dtrain.callbacks.stop_on_signal import StopOnSignal

CHECKPOINT_NAME = "requeue.ckpt"


def restart_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def under_slurm() -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return "SLURM_JOB_ID" in os.environ and SLURMEnvironment.detect()


def _job_id() -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]


def _seconds(limit: str) -> float | None:
    """Slurm's `[days-]HH:MM:SS` (or MM:SS) as seconds; None for UNLIMITED."""
    days, _, clock = limit.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
    except ValueError:
        return None
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def time_limit_reached(job_id: str) -> bool:
    """Whether the job has run out its time limit: a SIGTERM for any other reason (a user's
    scancel, a preemption Slurm requeues by itself) must not requeue it."""
    import datetime

    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    fields = dict(re.findall(r"(\w+)=(\S*)", shown))
    limit = _seconds(fields.get("TimeLimit", "UNLIMITED"))
    try:
        started = datetime.datetime.fromisoformat(fields.get("StartTime", ""))
    except ValueError:
        return False
    # Slurm sends the SIGTERM at the limit; a few seconds' slack for a slow checkpoint query.
    return limit is not None and (datetime.datetime.now() - started).total_seconds() >= limit - 5


class SlurmRequeue(StopOnSignal):
    """Added by dtrain.train to every run that is a task of a Slurm job step: StopOnSignal (the
    flag, the agreed step, the atomic checkpoint), ending in a requeue instead."""

    checkpoint_name = CHECKPOINT_NAME

    def __init__(self, requeue: bool = True, max_requeues: int = 3) -> None:
        super().__init__()
        self.requeue = requeue
        self.max_requeues = max_requeues
        # Installed now, not at fit start: the notice may come while data is loading, and USR1's
        # default action would end the process. Lightning then sees a USR1 handler and adds none.
        signal.signal(signal.SIGUSR1, self._on_signal)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)  # SIGTERM: a time limit, a preemption, a scancel
        for logger in trainer.loggers:
            logger.log_metrics({"slurm/restart_count": restart_count()}, step=trainer.global_step)

    def after_checkpoint(self, trainer, reason: str, checkpoint: Path) -> None:
        requeued = False
        if trainer.is_global_zero:
            requeued = self._requeue(reason)
            run_dir = Path(trainer.default_root_dir)
            what = f"requeued job {_job_id()}, which resumes there" if requeued else f"not requeued (continue with `python -m dtrain resume={run_dir}`)"
            print(f"dtrain: {reason} at step {trainer.global_step}: checkpointed to {checkpoint}; {what}", file=sys.stderr, flush=True)
        requeued = trainer.strategy.broadcast(requeued)
        # Requeued: Slurm ends the job's processes now anyway, leaving first keeps the end orderly.
        # Not requeued: the run is unfinished, and the job's state says so (FAILED, not COMPLETED).
        raise SystemExit(0 if requeued else 1)

    def _requeue(self, reason: str) -> bool:
        if not self.requeue:
            return False
        if restart_count() >= self.max_requeues:
            print(f"dtrain: job was requeued {restart_count()} times already (max_requeues={self.max_requeues})", file=sys.stderr)
            return False
        job_id = _job_id()
        # SIGTERM is a time limit, a preemption or a user's scancel: only the first requeues here.
        if reason == "SIGTERM" and not time_limit_reached(job_id):
            return False
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            print(f"dtrain: scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr)
        return done.returncode == 0


def stop_on_signal() -> Callback:
    """What a signal does to this run: in a Slurm job step, SlurmRequeue (settings from the job
    script's environment); elsewhere, StopOnSignal (SIGTERM, Ctrl-C)."""
    if not under_slurm():
        return StopOnSignal()
    return SlurmRequeue(requeue=os.environ.get("DTRAIN_REQUEUE", "1") != "0", max_requeues=int(os.environ.get("DTRAIN_MAX_REQUEUES", "3")))


def trainer_plugins(trainer_cfg) -> dict:
    """Lightning's Slurm environment without its own auto-requeue (SlurmRequeue does it), so
    Lightning neither announces nor installs a second set of signal handlers."""
    if not under_slurm() or trainer_cfg.get("plugins") is not None:
        return {}
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return {"plugins": [SLURMEnvironment(auto_requeue=False)]}


def requeued_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a requeued job continues from: the newest valid one in its run directory
    (explicit, so Lightning's own choice of an HPC checkpoint never applies)."""
    if not under_slurm() or restart_count() == 0:
        return None
    from dtrain.checkpoints import newest_valid_checkpoint

    return newest_valid_checkpoint(run_dir)
