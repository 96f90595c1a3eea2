"""The Lightning callback a trial adds (`+callbacks.tune_report`): every validation's metrics
to Ray, with an immutable checkpoint file written for that report."""

import json
import shutil
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dtrain.tune.files import CHECKPOINT_FILE, META_FILE, REPORTS_DIR, TIMING_FILE


def _in_tune_trial() -> bool:
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return _in_tune_session()


class TuneReport(Callback):
    """`via`: "tune" in a single-process trial, "train" in the workers of a multi-worker trial.
    Outside Ray (`python -m dtrain resume=<trial dir>` by hand) it does nothing."""

    def __init__(self, trial_id: str, keep: int = 2, via: str = "tune"):
        self.trial_id = trial_id
        self.via = via
        self.keep = max(1, int(keep))
        self.reports, self.seconds = 0, 0.0
        self.last: dict = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._in_ray():
            return
        start = time.perf_counter()
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        self.reports += 1  # before the save: the checkpoint of report n knows it made n
        # The trial's own count: Tune's training_iteration restarts from the sweep state it last
        # saved (every 10 s or more), so after a killed driver it can lag behind the checkpoint.
        metrics["reports"] = self.reports
        folder = self._save(trainer)
        self._report(trainer, metrics, folder)  # a scheduler that stops the trial ends it in here
        if trainer.is_global_zero:
            self._prune(folder.parent)
        self.last = metrics
        self.seconds += time.perf_counter() - start
        self._write_timing(trainer)

    def _save(self, trainer) -> Path:
        folder = Path(trainer.default_root_dir) / REPORTS_DIR / f"step{trainer.global_step:08d}"
        # A new file per report: Ray copies it after report() returns, and last.ckpt is rewritten every epoch.
        trainer.save_checkpoint(folder / CHECKPOINT_FILE)  # every rank: sharded strategies save together
        if trainer.is_global_zero:
            (folder / META_FILE).write_text(json.dumps({"trial_id": self.trial_id, "step": trainer.global_step}))
        return folder

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
