"""SIGTERM or Ctrl-C of a run: finish the step in hand, checkpoint it, and exit, resumable.

The signal handler only raises a flag. At the end of the next training step every rank agrees
(one reduction: whichever rank saw the signal), the checkpoint is written atomically where a
step has completed (the point a mid-epoch resume continues from bitwise), and the run ends with
one line naming the checkpoint and the command that continues it. A second Ctrl-C stops at once,
without a checkpoint (Lightning's own KeyboardInterrupt handling).

Lightning's own SIGTERM handler is replaced while training: it raises SystemExit at the next
batch (of validation too) without a checkpoint, and with exit status 0.

Slurm's requeue (dtrain.launch.requeue.SlurmRequeue) is this with another ending.
"""

import signal
import sys
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback

CHECKPOINT_NAME = "stopped.ckpt"


class StoppedBySignal(SystemExit):
    """The run stopped on a signal after saving its checkpoint (status 128 + the signal's number)."""


class StopOnSignal(Callback):
    """Added by dtrain.train to every run that is not a Slurm job step."""

    checkpoint_name = CHECKPOINT_NAME

    def __init__(self) -> None:
        self._signal: str | None = None
        self._replaced: dict[signal.Signals, object] = {}
        self._speaks = True  # rank 0 (a terminal's Ctrl-C reaches every local rank)

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (an in-process Ray trial runs in another)
        self._speaks = trainer.is_global_zero
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._replaced[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGINT and self._signal == "SIGINT":
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # the second Ctrl-C: at once, no checkpoint
        if self._signal is None and signum == signal.SIGINT and self._speaks:
            print("\ndtrain: Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again stops at once, without one)",
                  file=sys.stderr, flush=True)
        self._signal = self._signal or signal.Signals(signum).name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every rank stops at the same step, whichever of them saw the signal.
        if not trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False):
            return
        reason = self._signal or "a signal on another rank"
        checkpoint = Path(trainer.default_root_dir) / "checkpoints" / self.checkpoint_name
        from dtrain.callbacks.checkpoint import save_atomically

        save_atomically(trainer, checkpoint)  # a kill during the save leaves the previous one intact
        self.after_checkpoint(trainer, reason, checkpoint)

    def after_checkpoint(self, trainer, reason: str, checkpoint: Path) -> None:
        """End the run: one line from rank 0, status 128 + the signal's number on every rank."""
        run_dir = Path(trainer.default_root_dir)
        if trainer.is_global_zero:
            print(f"dtrain: stopped by {reason} at step {trainer.global_step}: checkpointed to {checkpoint}; "
                  f"continue with `python -m dtrain resume={run_dir}`", file=sys.stderr, flush=True)
        signum = getattr(signal, self._signal or "", signal.SIGTERM)
        raise StoppedBySignal(128 + int(signum))

    # Put back what was there (Lightning's, which its own teardown then replaces by the handlers
    # from before fit): at the end of training, or when it ended by an exception (this one too).
    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # SIGTERM stays a flag until Lightning's teardown puts back the handlers from before fit:
        # a launcher that ends the survivors of a dead rank (torchrun) would otherwise kill this
        # one silently while the failure is on its way to its one-line report.
        self._restore(keep=(signal.SIGTERM,))

    def _restore(self, keep: tuple[signal.Signals, ...] = ()) -> None:
        for signum, handler in self._replaced.items():
            if signum not in keep:
                signal.signal(signum, handler)
        self._replaced.clear()
