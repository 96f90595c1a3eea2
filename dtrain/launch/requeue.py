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

CHECKPOINT_NAME = "requeue.ckpt"


def restart_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def under_slurm() -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return "SLURM_JOB_ID" in os.environ and SLURMEnvironment.detect()


def _job_id() -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]


def _job_state(job_id: str) -> str:
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    match = re.search(r"JobState=(\S+)", shown)
    return match.group(1) if match else ""


class SlurmRequeue(Callback):
    """Added by dtrain.train to every run that is a task of a Slurm job step."""

    def __init__(self, requeue: bool = True, max_requeues: int = 3) -> None:
        self.requeue = requeue
        self.max_requeues = max_requeues
        self._signal: str | None = None
        # Installed now, not at fit start: the notice may come while data is loading, and USR1's
        # default action would end the process. Lightning then sees a USR1 handler and adds none.
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self._signal = self._signal or signal.Signals(signum).name

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning has registered its SIGTERM handler by now (it only notes the signal); ours
        # runs first and then Lightning's.
        lightning_handler = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):
            self._on_signal(signum, frame)
            if callable(lightning_handler):
                lightning_handler(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        for logger in trainer.loggers:
            logger.log_metrics({"slurm/restart_count": restart_count()}, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every rank stops at the same step, whichever of them saw the signal first.
        if not trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False):
            return
        reason = self._signal or "a signal on another rank"
        run_dir = Path(trainer.default_root_dir)
        final = run_dir / "checkpoints" / CHECKPOINT_NAME
        partial = final.with_suffix(".tmp")
        trainer.save_checkpoint(partial)
        requeued = False
        if trainer.is_global_zero:
            partial.replace(final)  # a kill during the save leaves the previous one intact
            requeued = self._requeue(reason)
            what = f"requeued job {_job_id()}, which resumes there" if requeued else "not requeued (resume it with `python -m dtrain resume=<run dir>`)"
            print(f"dtrain: {reason} at step {trainer.global_step}: checkpointed to {final}; {what}", file=sys.stderr, flush=True)
        trainer.strategy.barrier("slurm_requeue")
        # Slurm ends the job's processes now anyway; leaving first keeps the end orderly.
        raise SystemExit(0)

    def _requeue(self, reason: str) -> bool:
        if not self.requeue:
            return False
        if restart_count() >= self.max_requeues:
            print(f"dtrain: job was requeued {restart_count()} times already (max_requeues={self.max_requeues})", file=sys.stderr)
            return False
        job_id = _job_id()
        # SIGTERM alone is a time limit, a preemption or a user's scancel: a cancelled job stays cancelled.
        if reason == "SIGTERM" and _job_state(job_id).startswith("CANCELLED"):
            return False
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            print(f"dtrain: scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr)
        return done.returncode == 0


def requeue_callbacks() -> list[Callback]:
    """[SlurmRequeue] in a Slurm job step (settings from the job script's environment), else []."""
    if not under_slurm():
        return []
    return [SlurmRequeue(requeue=os.environ.get("DTRAIN_REQUEUE", "1") != "0", max_requeues=int(os.environ.get("DTRAIN_MAX_REQUEUES", "3")))]


def requeued_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a requeued job continues from: the newest valid one in its run directory
    (explicit, so Lightning's own choice of an HPC checkpoint never applies)."""
    if not under_slurm() or restart_count() == 0:
        return None
    from dtrain.checkpoints import newest_valid_checkpoint

    return newest_valid_checkpoint(run_dir)
