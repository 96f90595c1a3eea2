"""Classification of whole inputs (images, feature vectors, sequences) into classes."""

import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from dtrain.tasks.base import Task


def classification_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes),
        }
    )


class Classification(Task):
    def __init__(self, net, optimizer, num_classes: int, scheduler=None, label_smoothing: float = 0.0, **options):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.label_smoothing = label_smoothing
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=self.label_smoothing)
        self.log_train("train/loss", loss)
        return loss

    def _evaluate(self, batch, metrics, loss_metric, stage: str) -> None:
        x, y = batch
        logits = self.net(x)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        metrics.update(logits, y)
        self.log_at_epoch_end(f"{stage}/loss", loss_metric, prog_bar=True)
        self.log_at_epoch_end(f"{stage}/metrics", metrics, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, self.val_loss, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, self.test_loss, "test")
