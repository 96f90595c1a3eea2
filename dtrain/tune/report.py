"""The Lightning callback a trial adds (`+callbacks.tune_report`): every validation's metrics
to Ray, with an immutable checkpoint file written for that report."""

import json
import os
import shutil
import time
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint

from dtrain.tune.files import CHECKPOINT_FILE, META_FILE, REPORTS_DIR, TIMING_FILE


def _in_tune_trial() -> bool:
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return _in_tune_session()


class TuneReport(Checkpoint):
    """`via`: "tune" in a single-process trial, "train" in the workers of a multi-worker trial.
    Outside Ray (`python -m dtrain resume=<trial dir>` by hand) it does nothing.

    A Checkpoint to Lightning, which therefore calls its hooks after the ModelCheckpoints': a
    validation that ends an epoch is reported when the epoch ends, with the last.ckpt that
    dtrain's checkpoint callback has just written there, linked instead of saved again (one
    save of the run a report fewer, 7-11 ms for the digits CNN). Any other validation (inside
    an epoch, or where no last.ckpt was written) is reported at its end with a save of its own."""

    def __init__(self, trial_id: str, keep: int = 2, via: str = "tune"):
        self.trial_id = trial_id
        self.via = via
        self.keep = max(1, int(keep))
        self.reports, self.seconds = 0, 0.0
        self.last: dict = {}
        self._pending: dict | None = None  # the metrics of a validation reported when its epoch ends
        self._active = False  # inside a Ray trial: decided once, at set-up

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._active = self._in_ray()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # Counted before any checkpoint of this validation is saved (the best one at its end, last.ckpt
        # at the epoch's end, the report's): each knows it came with report n, and a resumed or retried
        # trial counts on from there. The trial's own count: Tune's training_iteration restarts from
        # the sweep state it last saved, so after a killed driver it can lag behind the checkpoint.
        if not trainer.sanity_checking and self._active:
            self.reports += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._active:
            return
        start = time.perf_counter()
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step, reports=self.reports)
        if trainer.state.fn == "fit" and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._pending = metrics
        else:
            self._send(trainer, metrics, self._save(trainer), start)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        start = time.perf_counter()
        metrics, self._pending = self._pending, None
        self._send(trainer, metrics, self._link_last(trainer) or self._save(trainer), start)

    def _send(self, trainer, metrics: dict, folder: Path, start: float) -> None:
        self._report(trainer, metrics, folder)  # a scheduler that stops the trial ends it in here
        if trainer.is_global_zero:
            self._prune(folder.parent)
        self.last = metrics
        self.seconds += time.perf_counter() - start
        self._write_timing(trainer)

    def _folder(self, trainer) -> Path:
        return Path(trainer.default_root_dir) / REPORTS_DIR / f"step{trainer.global_step:08d}"

    def _save(self, trainer) -> Path:
        folder = self._folder(trainer)
        # A new file per report: Ray copies it after report() returns, and last.ckpt is rewritten every epoch.
        trainer.save_checkpoint(folder / CHECKPOINT_FILE)  # every rank: sharded strategies save together
        self._write_meta(trainer, folder)
        return folder

    def _link_last(self, trainer) -> Path | None:
        """The report's file as a second name of the last.ckpt written at this epoch's end (a
        single-process run's; dtrain replaces last.ckpt with a new file at each save, so the
        report keeps what it names). None where there is none to link."""
        from dtrain.callbacks.checkpoint import AtomicCheckpoint

        if trainer.world_size != 1:
            return None  # every rank must take the same way; the sharded saves are folders
        saved = [c.last_saved_at_this_epoch_end(trainer) for c in trainer.checkpoint_callbacks if isinstance(c, AtomicCheckpoint)]
        last = next((path for path in saved if path is not None), None)
        if last is None:
            return None
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            (folder / CHECKPOINT_FILE).unlink(missing_ok=True)  # a retried step's report
            os.link(last, folder / CHECKPOINT_FILE)
        except OSError:  # a filesystem without hard links
            return None
        self._write_meta(trainer, folder)
        return folder

    def _write_meta(self, trainer, folder: Path) -> None:
        if trainer.is_global_zero:
            (folder / META_FILE).write_text(json.dumps({"trial_id": self.trial_id, "step": trainer.global_step}))

    def state_dict(self) -> dict:
        return {"reports": self.reports}  # a resumed or retried trial counts on

    def load_state_dict(self, state_dict: dict) -> None:
        self.reports = int(state_dict.get("reports", 0))

    def _write_timing(self, trainer) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / TIMING_FILE
            tmp = path.with_name(path.name + ".tmp")  # replaced whole: the trial's end and tests read it
            tmp.write_text(json.dumps({"reports": self.reports, "seconds": round(self.seconds, 4), "last": self.last}))
            tmp.replace(path)

    def _in_ray(self) -> bool:
        if self.via == "train":
            return True
        import importlib.util

        return importlib.util.find_spec("ray") is not None and _in_tune_trial()

    def _report(self, trainer, metrics: dict, folder: Path) -> None:
        if self.via == "train":
            import ray.train

            checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if trainer.is_global_zero else None
            ray.train.report(metrics, checkpoint=checkpoint)  # every worker reports; Tune gets rank 0's
        else:
            from ray import tune

            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    def _prune(self, reports: Path) -> None:
        for old in sorted(reports.glob("step*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
