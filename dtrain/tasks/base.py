"""What every task shares: the net, the optimizer and schedule from config, lean loss logging."""

from collections.abc import Callable

import lightning as L
import torch
from torch import nn


class Task(L.LightningModule):
    """A LightningModule around a plain `net`.

    `optimizer` is a partial taking the parameters (`model.optimizer` in the config);
    `scheduler` an optional partial taking the optimizer and, when it asks for it, the run's
    number of optimizer steps (`total_steps`). Subclasses define the steps and metrics.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
    ):
        super().__init__()
        # The plain arguments travel in checkpoints; the net and the optimizer factories are
        # rebuilt from the run's config.yaml (dtrain logs the whole config itself).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def log_train(self, name: str, value: torch.Tensor, prog_bar: bool = True) -> None:
        """Log a training value only on the steps the loggers write (Lightning writes after the
        optimizer step, hence the +1), sparing every other step the logging machinery."""
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log(name, value, on_step=True, on_epoch=False, prog_bar=prog_bar)
