"""Training throughput (samples per second over the whole data-parallel world), measured between
logging steps so that no step pays for a host synchronisation it does not need."""

import time

import torch
from lightning.pytorch.callbacks import Callback


class Throughput(Callback):
    def __init__(self):
        self._last_step: int | None = None
        self._last_time = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_step = None  # the time spent validating is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step or step % trainer.log_every_n_steps:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._last_step is not None:
            samples = (step - self._last_step) * trainer.datamodule.batch_size
            pl_module.log("train/samples_per_sec", samples / (now - self._last_time), on_step=True, on_epoch=False)
        self._last_step, self._last_time = step, now
