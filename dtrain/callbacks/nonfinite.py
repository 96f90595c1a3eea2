"""A non-finite loss (NaN or inf) stops the run, or with `runtime.skip_nonfinite=true` its
optimizer step is skipped and counted.

Found from the loss each training step returns (automatic optimisation), or from the
gradients just before each optimizer step (manual optimisation, e.g. a GAN, and when skipping,
which must act before the step; an overflow in the backward pass counts too). It works for
every task and for plain LightningModules. Under DeepSpeed ZeRO the gradients live inside
DeepSpeed, so there only the loss is watched and steps cannot be skipped.

Stopping costs no host-device synchronisation: the first bad step is kept on the device and
read on logging steps, before each validation and at each epoch's end (before Lightning's
checkpoint callbacks, which run last, could save). Found, every rank agrees on it (one
reduction), Lightning is asked to stop after this step (`trainer.should_stop`), the checkpoint
callbacks save nothing more, and `dtrain.train.run` raises the one-line error once fit has
returned on every rank: not inside Lightning's loop, where an exception in one of several
processes leaves the others waiting in its teardown. The newest checkpoint on disk is the last
good one. Skipping has to decide on the host at
every step: a synchronisation per step, the price of asking for it. A skipped step leaves
weights and optimizer state as they were (every gradient is dropped, so the optimizer steps
no parameter); the learning-rate schedule still advances.
"""

import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from dtrain.config.errors import ConfigError
from dtrain.perf.optimizer_stats import gradient_norm
from dtrain.perf.steps import is_logging_step, logged_step


class NonFiniteLoss(ConfigError):
    """The run stopped on a non-finite loss: one line, with the step and the checkpoint to go back to."""


class NonFiniteGuard(Callback):
    def __init__(self, skip: bool = False):
        self.skip = bool(skip)
        self.skipped = 0  # optimizer steps skipped so far (resumes included)
        self._first_bad: torch.Tensor | None = None  # the first bad step, on the device; -1: none yet
        self.error: NonFiniteLoss | None = None  # set when the run was stopped; raised by run() after fit

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.skip or not pl_module.automatic_optimization:
            return  # watched through the gradients instead
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._note(trainer, loss.detach())
        if is_logging_step(trainer):
            self._stop_if_bad(trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.skip and pl_module.automatic_optimization:
            return  # watched through the loss, which costs nothing to check
        norm = gradient_norm(p for group in optimizer.param_groups for p in group["params"])
        if norm is None:
            return
        if not self.skip:
            self._note(trainer, norm)  # a NaN or inf in any gradient makes the norm one
            if is_logging_step(trainer):
                self._stop_if_bad(trainer)
            return
        if not bool(norm.isfinite()):  # the per-step synchronisation skipping needs
            self.skipped += 1
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None  # the optimizer steps no parameter and keeps its state
        if is_logging_step(trainer) and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"train/nonfinite_skipped": float(self.skipped)}, step=logged_step(trainer))

    def _note(self, trainer, values: torch.Tensor) -> None:
        """Remember the first step whose loss (or gradient norm) was not finite, without reading
        it on the host (in one CPU process reading it is free; several processes keep it as a
        tensor, so that every rank joins the same reduction when it is read)."""
        device = values.device
        if device.type == "cpu" and trainer.world_size == 1:
            # A scalar is read in one op, where isfinite().all() took two and, their code pushed
            # out of the CPU caches by the step's math, about 0.1 ms.
            finite = math.isfinite(values.item()) if values.numel() == 1 else bool(values.isfinite().all())
            if self._first_bad is None and not finite:
                self._first_bad = torch.tensor(logged_step(trainer))
            return
        finite = values.isfinite().all()
        bad_now = torch.where(finite, torch.tensor(-1, device=device), torch.tensor(logged_step(trainer), device=device))
        self._first_bad = bad_now if self._first_bad is None else torch.where(self._first_bad >= 0, self._first_bad, bad_now)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop_if_bad(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_if_bad(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # A save no checkpoint callback asked for (a user's own, a Slurm notice): in one process
        # it is refused by raising before the file is written; several processes cannot raise here.
        if trainer.world_size == 1:
            self._stop_if_bad(trainer)
            if self.error is not None:
                raise self.error

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.skip:
            from dtrain.perf.summary import write_summary

            write_summary(trainer, {"train/nonfinite_skipped": self.skipped})

    def _stop_if_bad(self, trainer) -> None:
        if self._first_bad is None or self.error is not None:
            return
        first_bad = self._first_bad
        if trainer.world_size > 1:  # every rank stops together, naming the earliest bad step of any
            seen = torch.where(first_bad >= 0, first_bad, torch.tensor(2**62, device=first_bad.device))
            first_bad = trainer.strategy.reduce(seen, reduce_op="min")
            first_bad = torch.where(first_bad >= 2**62, torch.tensor(-1, device=first_bad.device), first_bad)
        step = int(first_bad)
        if step < 0:
            return
        trainer.should_stop = True
        for checkpoint in trainer.checkpoint_callbacks:  # nothing of the poisoned weights is saved
            checkpoint.save_top_k, checkpoint.save_last = 0, False
        from dtrain.checkpoints import newest_valid_checkpoint

        last_good = newest_valid_checkpoint(Path(trainer.default_root_dir))
        back = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written before it"
        self.error = NonFiniteLoss(
            "runtime.skip_nonfinite",
            f"the loss (or its gradients) became NaN or inf at step {step}; {back}. Lower model.optimizer.lr or clip "
            f"gradients (trainer.gradient_clip_val=1.0), or resume skipping such steps: "
            f"python -m dtrain resume={trainer.default_root_dir} runtime.skip_nonfinite=true",
        )


def raise_if_stopped(trainer) -> None:
    """After fit: the error of a run NonFiniteGuard stopped, on every rank."""
    for callback in trainer.callbacks:
        if isinstance(callback, NonFiniteGuard) and callback.error is not None:
            raise callback.error
