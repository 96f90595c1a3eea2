"""Progress: a bar per stage in a terminal; one plain line every N steps in a log (stdout not a
terminal, or under Slurm, Ray or torchrun), where a redrawn bar would be noise."""

import logging
import os
import sys
import time

from lightning.pytorch.callbacks import Callback, ProgressBar

from dtrain.config.errors import ConfigError

BARS = ("rich", "tqdm", "lines")
log = logging.getLogger("dtrain.progress")  # the console and <run>/run.log


def under_launcher() -> bool:
    """Slurm, torchrun or a Ray worker: the output goes to a log file, whatever it looks like."""
    if "SLURM_JOB_ID" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        return True
    ray = sys.modules.get("ray")  # a Ray worker has Ray imported and connected; never import it here
    return ray is not None and ray.is_initialized()


def interactive() -> bool:
    return sys.stdout.isatty() and not under_launcher()


def progress(bar: str = "rich", every_n_steps: int = 50, enabled: bool = True) -> Callback:
    """The progress callback for `callbacks.progress` (`callbacks/progress=rich|tqdm|lines`).

    `enabled` is `trainer.enable_progress_bar`: false keeps the plain lines but is no bar, which
    Lightning would refuse beside that flag.
    """
    if bar not in BARS:
        raise ConfigError("callbacks.progress.bar", f"unknown bar {bar!r}; use one of {', '.join(BARS)}")
    if every_n_steps < 1:
        raise ConfigError("callbacks.progress.every_n_steps", f"must be at least 1, not {every_n_steps}")
    if not enabled:
        return StepLines(every_n_steps)
    if bar == "lines" or not interactive():
        return StepLinesBar(every_n_steps)
    if bar == "tqdm":
        from lightning.pytorch.callbacks import TQDMProgressBar

        return throttled(TQDMProgressBar)()
    from lightning.pytorch.callbacks import RichProgressBar

    return throttled(RichProgressBar)()


class Throttled:
    """Redraw a Lightning bar at most every `interval` seconds, and at each stage's last batch.

    Lightning's bars redraw, and read every progress-bar metric, after every batch: the Rich bar
    took 3.8 ms of CPU a batch here, more than a 5 ms step of a small net spends on its own
    maths. A person reads a bar a few times a second, so the batches in between only count.
    """

    interval = 0.2
    _drawn = float("-inf")

    def _due(self, batch_idx: int, total) -> bool:
        now = time.monotonic()
        last = isinstance(total, (int, float)) and batch_idx + 1 >= total
        if last or now - self._drawn >= self.interval:
            self._drawn = now
            return True
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def throttled(bar: type[ProgressBar]) -> type[ProgressBar]:
    """Lightning's `bar` class, redrawn as `Throttled` says."""
    return type(bar.__name__, (Throttled, bar), {"__doc__": f"Lightning's {bar.__name__}, redrawn at most every {Throttled.interval} s."})


def _metrics(values: dict, prefix: str = "") -> str:
    return "  ".join(f"{key} {float(value):.4g}" for key, value in sorted(values.items()) if key.startswith(prefix) and _number(value))


def _number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class StepLines(Callback):
    """On rank 0: a line every `every_n_steps` optimizer steps, one after each validation and one at
    the end of each training epoch; nothing is ever redrawn."""

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps
        self._shown_step = 0
        self._since = (time.perf_counter(), 0)

    def _say(self, trainer, text: str) -> None:
        if trainer.is_global_zero:
            log.info(text)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._since = (time.perf_counter(), 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step // self.every_n_steps <= self._shown_step // self.every_n_steps:
            return
        self._shown_step = step
        started, batches = self._since
        rate = (batch_idx + 1 - batches) / max(time.perf_counter() - started, 1e-9)
        self._since = (time.perf_counter(), batch_idx + 1)
        total = trainer.num_training_batches
        of = f"/{total}" if isinstance(total, int) else ""
        self._say(trainer, f"Epoch {trainer.current_epoch}  batch {batch_idx + 1}{of}  step {step}  "
                           f"{_metrics(trainer.progress_bar_metrics, 'train/')}  {rate:.1f} it/s")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._say(trainer, f"Epoch {trainer.current_epoch}  step {trainer.global_step}  validation: "
                               f"{_metrics(trainer.callback_metrics, 'val/')}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._say(trainer, f"Epoch {trainer.current_epoch}  done at step {trainer.global_step}  "
                           f"{_metrics(trainer.progress_bar_metrics, 'train/')}")


class StepLinesBar(StepLines, ProgressBar):
    """StepLines as Lightning's progress bar, so that Lightning adds no bar of its own."""

    def __init__(self, every_n_steps: int = 50):
        ProgressBar.__init__(self)
        StepLines.__init__(self, every_n_steps)
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _say(self, trainer, text: str) -> None:
        if self._enabled:
            super()._say(trainer, text)
