"""Regression and forecasting: real-valued targets, mean squared error loss, MSE/MAE/R^2 metrics."""

import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection, R2Score

from dtrain.tasks.base import Task


def regression_metrics() -> MetricCollection:
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})


class Regression(Task):
    """The net maps inputs to (batch, outputs); targets have the same shape."""

    def __init__(self, net, optimizer, scheduler=None, **options):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.val_metrics = regression_metrics().clone(prefix="val/")
        self.test_metrics = regression_metrics().clone(prefix="test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log_train("train/loss", loss)
        return loss

    def _evaluate(self, batch, metrics, loss_metric, stage: str) -> None:
        x, y = batch
        prediction = self.net(x)
        loss_metric.update(F.mse_loss(prediction, y), weight=y.numel())
        metrics.update(prediction.flatten(), y.flatten())
        self.log_at_epoch_end(f"{stage}/loss", loss_metric, prog_bar=True)
        self.log_at_epoch_end(f"{stage}/metrics", metrics, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, self.val_loss, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, self.test_loss, "test")
