"""Test instruments that plug into a run like any user callback (`+callbacks.probe._target_=...`)."""

import hashlib
import json
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from dtrain.tune.files import CHECKPOINT_FILE
from dtrain.tune.report import TuneReport


def fingerprint(batch) -> str:
    """A short hash of a batch's tensors: equal batches, equal fingerprints."""
    digest = hashlib.sha1()
    for tensor in batch if isinstance(batch, (list, tuple)) else [batch]:
        if isinstance(tensor, torch.Tensor):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class RankProbe(Callback):
    """Writes <run>/probe/rank<r>.json (fingerprints of the batches this rank trained on) and
    rank<r>.pt (this rank's final parameters, as this rank holds them)."""

    def __init__(self, max_batches: int = 1000):
        self.max_batches = max_batches
        self.batches: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if len(self.batches) < self.max_batches:
            self.batches.append(fingerprint(batch))

    def on_train_end(self, trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / "probe"
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": trainer.world_size, "batches": self.batches}))
        params = {name: p.detach().cpu().clone() for name, p in pl_module.named_parameters()}
        torch.save(params, out / f"rank{rank}.pt")


class PoisonBatches(Callback):
    """Makes the inputs of the training batches at `steps` NaN (a diverging run, on purpose) and
    writes <run>/poison.json: the parameters' sum at the start of each batch from the first
    poisoned step on (equal sums across a skipped step: it changed nothing)."""

    def __init__(self, steps: list[int]):
        self.steps = set(steps)
        self.sums: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        if step >= min(self.steps) and step <= max(self.steps) + 1:
            self.sums[step] = float(sum(p.detach().double().sum() for p in pl_module.parameters()))
            (Path(trainer.default_root_dir) / "poison.json").write_text(json.dumps(self.sums))
        if step in self.steps:
            batch[0].fill_(float("nan"))


class HostOutOfMemory(Callback):
    """At training batch `at`, asks the CPU allocator for a petabyte: a real allocation failure."""

    def __init__(self, at: int = 1):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.at:
            torch.empty(1 << 50, dtype=torch.uint8)


class DyingInWorkers(torch.utils.data.Dataset):
    """`dataset`, except that a DataLoader worker process asked for a sample SIGKILLs itself."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        import os
        import signal

        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.dataset[index]


def dying_worker_digits(**kwargs):
    """The digits datamodule, whose training samples kill the worker process loading them
    (`data._target_=tests.probes.dying_worker_digits data.num_workers=2`)."""
    from dtrain.data.digits import DigitsDataModule

    class DyingWorkerDigits(DigitsDataModule):
        def setup(self, stage=None):
            super().setup(stage)
            if not isinstance(self.train_set, DyingInWorkers):
                self.train_set = DyingInWorkers(self.train_set)

    return DyingWorkerDigits(**kwargs)


class FillDisk(Callback):
    """At training batch `at` of epoch `epoch`, another writer takes what is left on the run
    directory's disk: a file `<run>/../filler` as large as the free space (once: a resumed run
    finds `<run>/../filled` and leaves the disk alone)."""

    def __init__(self, at: int = 0, epoch: int = 1):
        self.at, self.epoch = at, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        import os
        import shutil

        if trainer.current_epoch != self.epoch or batch_idx != self.at or not trainer.is_global_zero:
            return
        filler = Path(trainer.default_root_dir).parent / "filler"
        once = filler.with_name("filled")
        if once.exists():
            return
        once.touch()
        with open(filler, "ab") as file:
            chunk = bytes(1 << 16)
            try:
                while True:
                    file.write(chunk)
                    file.flush()
            except OSError:
                pass
            os.fsync(file.fileno())
        assert shutil.disk_usage(filler.parent).free < 1 << 17


class DieAt(Callback):
    """Rank `rank` SIGKILLs itself at the start of training batch `step` (global step), once: a
    resumed run finds `<run>/died` and trains on."""

    def __init__(self, rank: int = 1, step: int = 8):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        import os
        import signal

        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        once = Path(trainer.default_root_dir) / "died"
        if once.exists():
            return
        once.touch()
        os.kill(os.getpid(), signal.SIGKILL)


class PauseAt(Callback):
    """Rank 0 writes `<run>/paused` at the start of training batch `step` (global step), then
    sleeps `seconds` inside that step: a test's signal lands mid-step, at a known step. Once: a
    resumed run finds the file and trains on."""

    def __init__(self, step: int = 5, seconds: float = 3.0):
        self.step, self.seconds = step, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        import time

        marker = Path(trainer.default_root_dir) / "paused"
        if trainer.global_rank != 0 or trainer.global_step != self.step or marker.exists():
            return
        marker.touch()
        time.sleep(self.seconds)


class HangAt(Callback):
    """Rank `rank` stops answering at the start of training batch `step`: it sleeps for an hour
    (a hung data read, a deadlock), while the others wait for it in the step's all-reduce. Once:
    a resumed run finds `<run>/hung` and trains on."""

    def __init__(self, rank: int = 1, step: int = 5):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        import time

        once = Path(trainer.default_root_dir) / "hung"
        if trainer.global_rank != self.rank or trainer.global_step != self.step or once.exists():
            return
        once.touch()
        time.sleep(3600)


class EnvironmentProbe(Callback):
    """Writes <run>/environment.json: the value of `name` in the environment at each training step."""

    def __init__(self, name: str):
        self.name = name
        self.seen: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen.append(os.environ.get(self.name))

    def on_train_end(self, trainer, pl_module) -> None:
        (Path(trainer.default_root_dir) / "environment.json").write_text(json.dumps(self.seen))


class FreezeCountProbe(Callback):
    """Writes <run>/freeze_counts.json: the objects Python's collector leaves alone (gc.freeze) at each training step."""

    def __init__(self):
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        import gc

        self.seen.append(gc.get_freeze_count())

    def on_train_end(self, trainer, pl_module) -> None:
        (Path(trainer.default_root_dir) / "freeze_counts.json").write_text(json.dumps(self.seen))


class ValidationProbe(Callback):
    """Writes <run>/validation.json, one entry per validation of fit: the val/acc the run logged,
    the accuracy of the module over the whole validation set computed here, and how many times
    the module's `log` was called from inside its validation steps."""

    def __init__(self):
        self.entries: list[dict] = []
        self.step_logs = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        log = pl_module.log

        def counting_log(*args, **kwargs):
            if pl_module._current_fx_name == "validation_step":
                self.step_logs += 1
            return log(*args, **kwargs)

        pl_module.log = counting_log  # log_dict logs through it too

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        training = pl_module.training
        pl_module.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in trainer.datamodule.val_dataloader():
                correct += int((pl_module(x).argmax(1) == y).sum())
                total += len(y)
        pl_module.train(training)
        self.entries.append({"logged": float(trainer.callback_metrics["val/acc"]), "whole_set": correct / total, "step_logs": self.step_logs})

    def on_train_end(self, trainer, pl_module) -> None:
        (Path(trainer.default_root_dir) / "validation.json").write_text(json.dumps(self.entries))


class RecordingReport(TuneReport):
    """dtrain's TuneReport outside Ray: writes <run>/reports.jsonl, a line per report, with what
    its checkpoint file holds and whether that file was the run's last.ckpt at the time."""

    def __init__(self, keep: int = 2):
        super().__init__(trial_id="probe", keep=keep)

    def _in_ray(self) -> bool:
        return True

    def _report(self, trainer, metrics: dict, folder: Path) -> None:
        from dtrain.checkpoints import load_checkpoint

        file = folder / CHECKPOINT_FILE
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        checkpoint = load_checkpoint(file)
        (state,) = [s for key, s in checkpoint["callbacks"].items() if key.startswith(type(self).__qualname__)]
        line = {"metrics": metrics, "linked": last.is_file() and os.path.samefile(file, last),
                "checkpoint_step": checkpoint["global_step"], "checkpoint_reports": state["reports"]}
        with open(Path(trainer.default_root_dir) / "reports.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


class SanityCheckValues(Callback):
    """Writes <run>/sanity_check.json: the values the sanity check left in callback_metrics."""

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        values = {key: float(value) for key, value in trainer.callback_metrics.items()}
        (Path(trainer.default_root_dir) / "sanity_check.json").write_text(json.dumps(values))
