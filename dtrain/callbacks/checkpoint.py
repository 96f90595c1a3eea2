"""ModelCheckpoint whose saves are atomic under every strategy: a kill at any moment of a save
leaves the previous checkpoint complete, and the resume picker finds it.

Why here and not in a CheckpointIO plugin: the sharded strategies (FSDP with a sharded state
dict, ModelParallel, DeepSpeed) write their folders themselves and never call the strategy's
CheckpointIO, while every save a ModelCheckpoint makes goes through `_save_checkpoint`, on every
rank. Lightning 2.6's own single-file save (TorchCheckpointIO -> cloud_io._atomic_save) writes a
temporary file in the system temp folder (not the checkpoint's) and moves it over the target
without fsync: on one filesystem that is a rename of unsynced data, across filesystems
shutil.move copies into the target in place (a kill leaves it cut short), and a killed save's
temporary file stays in /tmp. Its sharded saves write into an existing folder in place.

Here a save is written under a staging name beside the target (`last.ckpt.tmp-<pid>`, which
`checkpoints/*.ckpt` does not match), synced, and only then given the target's name:
- a file: fsync, os.replace, fsync of the folder;
- a folder (every rank writes its shard): each node's local rank 0 syncs the files, a barrier,
  then rank 0 writes dtrain.checkpoints.COMPLETE_MARKER last (itself atomically) and swaps the
  folder in with renames (checkpoint_files.install).
The single-file write itself goes straight into the staging file (DirectCheckpointIO, set in
`setup` when the strategy has Lightning's default CheckpointIO), not through /tmp. What a killed
save left behind (staging and trash names) is deleted when the next run in the folder starts.
Old checkpoints are deleted by renaming them out of `*.ckpt` first.

A resumed run also rewinds the loggers that keep rows on disk (dtrain's CSVLogger) to the
checkpoint: the rows the killed run wrote after it are recorded again by the resumed run.

Not covered: an asynchronous CheckpointIO (the file is not written when the save returns, so
it cannot be renamed yet) and non-local paths (s3://...), which keep Lightning's own save; `save_last="link"` replaces the
link non-atomically (a kill in between leaves the checkpoint it pointed to, which the picker finds).
"""

import os
from functools import cached_property
from pathlib import Path
from weakref import proxy

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from dtrain.callbacks import checkpoint_files as files


class DirectCheckpointIO(TorchCheckpointIO):
    """torch.save straight into the given (staging) path, without Lightning's detour through a
    temporary file in the system temp folder: the staging name already makes the save atomic."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())


def save_atomically(trainer, filepath: str | Path, weights_only: bool = False) -> None:
    """trainer.save_checkpoint(filepath) under any strategy, atomically; call it on every rank."""
    final = Path(filepath)
    staging = Path(trainer.strategy.broadcast(str(files.staging_path(final))))  # rank 0's name for all
    try:
        trainer.save_checkpoint(staging, weights_only)  # every rank; ends with a barrier
        if trainer.local_rank == 0 and staging.exists():  # one process per node syncs what its ranks wrote
            files.fsync_tree(staging)
        trainer.strategy.barrier("dtrain.atomic_checkpoint.synced")
        if trainer.is_global_zero:
            if staging.is_dir():
                files.write_marker(staging, trainer.global_step, trainer.current_epoch)
            files.install(staging, final)
        trainer.strategy.barrier("dtrain.atomic_checkpoint.installed")
    except BaseException:
        if trainer.is_global_zero:
            files.remove_leftovers(final.parent)  # this save's staging files; the previous checkpoint stays
        raise


def _last_epoch(trainer) -> bool:
    """Whether training ends with this epoch (on_train_end then saves last.ckpt)."""
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    return (trainer.should_stop or (max_steps not in (None, -1) and trainer.global_step >= max_steps)
            or (max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs))


class AtomicCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (same arguments, same files), saving with save_atomically."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rewind_loggers = False
        self._atomic = False  # decided in setup, when the strategy's CheckpointIO is known
        self._saved_at_epoch_end = (-1, -1)  # (epoch, global step) of the last epoch-end save of last.ckpt

    def _generate_state_key(self, **kwargs) -> str:
        # ModelCheckpoint's own key: a run checkpointed by a plain ModelCheckpoint (dtrain before
        # atomic saves) resumes with its best and last paths.
        return f"{ModelCheckpoint.__qualname__}{kwargs!r}"

    @cached_property
    def state_key(self) -> str:
        # Lightning formats the key (a repr of five settings fixed at init) for every hook it
        # calls, every step: formatted once.
        return super().state_key

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        local = self.dirpath is not None and _is_local_file_protocol(self.dirpath)
        self._atomic = local and not isinstance(trainer.strategy.checkpoint_io, AsyncCheckpointIO)
        if not self._atomic:
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default, not a user's plugin
            trainer.strategy.checkpoint_io = DirectCheckpointIO()
        if trainer.is_global_zero:
            files.remove_leftovers(Path(self.dirpath))  # saves a kill cut short in an earlier run
        trainer.strategy.barrier("dtrain.atomic_checkpoint.setup")

    def on_train_start(self, trainer, pl_module) -> None:
        self._rewind_loggers = trainer.ckpt_path is not None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._rewind_loggers:
            return
        self._rewind_loggers = False
        # The step loggers get (Lightning's logger connector uses this counter, not global_step,
        # which counts every optimizer's steps); only now, after the restored loop's reset, is it
        # the step of the first row this resumed run writes.
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            if hasattr(logger, "forget_steps_from"):
                logger.forget_steps_from(step)

    # Lightning 2.6 writes `last` only in a step that also saved a top-k checkpoint, so a
    # last-only callback (save_top_k=0) writes last.ckpt only when training ends: a run killed
    # later would lose every epoch since its best one. Here it is written at every epoch's end
    # (after that epoch's validation; a resumed run starts the next epoch), and once more when
    # training ends, where the loop's state has that epoch completed.
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._last_only and not self._should_skip_saving_checkpoint(trainer) and not _last_epoch(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._saved_at_epoch_end = (trainer.current_epoch, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if self._last_only and (self._last_global_step_saved != step or self._saved_at_epoch_end[1] == step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def last_saved_at_this_epoch_end(self, trainer) -> Path | None:
        """last.ckpt, if this callback has just written it (as one file) at the end of the
        trainer's current epoch: what a later callback can hand on without saving the run again."""
        if self._saved_at_epoch_end != (trainer.current_epoch, trainer.global_step) or not self.last_model_path:
            return None
        path = Path(self.last_model_path)
        return path if path.is_file() else None

    @property
    def _last_only(self) -> bool:
        return self.save_top_k == 0 and bool(self.save_last)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if not self._atomic:
            return super()._save_checkpoint(trainer, filepath)
        save_atomically(trainer, filepath, self.save_weights_only)
        # What ModelCheckpoint._save_checkpoint does after its save.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if not self._atomic:
            return super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            files.remove(Path(filepath))
        trainer.strategy.barrier("dtrain.atomic_checkpoint.removed")
