"""The Lightning callback a trial adds (`+callbacks.tune_report`): every validation's metrics
to Ray, with an immutable checkpoint file written for that report."""

import json
import shutil
from pathlib import Path

from lightning.pytorch.callbacks import Callback

REPORTS_DIR = "checkpoints/reports"  # not checkpoints/*.ckpt: a resume takes last.ckpt, the newest
CHECKPOINT_FILE = "model.ckpt"
META_FILE = "meta.json"  # which trial wrote a checkpoint: a PBT restart may hand us another's


def _in_train_worker() -> bool:
    """True inside a Ray Train worker (a multi-worker trial), False in a Tune function trial."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return not _in_tune_session()


class TuneReport(Callback):
    def __init__(self, trial_id: str, keep: int = 2):
        self.trial_id = trial_id
        self.keep = max(1, int(keep))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        folder = Path(trainer.default_root_dir) / REPORTS_DIR / f"step{trainer.global_step:08d}"
        # A new file per report: Ray copies it after report() returns, and last.ckpt is rewritten every epoch.
        trainer.save_checkpoint(folder / CHECKPOINT_FILE)  # every rank: sharded strategies save together
        if trainer.is_global_zero:
            (folder / META_FILE).write_text(json.dumps({"trial_id": self.trial_id, "step": trainer.global_step}))
        self._report(trainer, metrics, folder)
        if trainer.is_global_zero:
            self._prune(folder.parent)

    def _report(self, trainer, metrics: dict, folder: Path) -> None:
        if _in_train_worker():
            import ray.train

            checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if trainer.is_global_zero else None
            ray.train.report(metrics, checkpoint=checkpoint)  # every worker reports; Tune gets rank 0's
        else:
            from ray import tune

            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    def _prune(self, reports: Path) -> None:
        for old in sorted(reports.glob("step*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
