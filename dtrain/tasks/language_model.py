"""Next-token language modelling: cross-entropy, bits per token and perplexity."""

import math

import torch.nn.functional as F
from torchmetrics import MeanMetric

from dtrain.tasks.base import Task


class LanguageModel(Task):
    """The net maps tokens (batch, length) to logits (batch, length, vocab). Bits per token are
    logged as `bpc` (bits per character) when the tokens are bytes, else as `bits_per_token`."""

    def __init__(self, net, optimizer, scheduler=None, tokenizer: str = "bytes", **options):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.bits_name = "bpc" if tokenizer == "bytes" else "bits_per_token"

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        loss = self._loss(tokens, targets)
        self.log_train("train/loss", loss)
        return loss

    def _loss(self, tokens, targets):
        logits = self.net(tokens)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _evaluate(self, batch, loss_metric, stage: str) -> None:
        tokens, targets = batch
        loss_metric.update(self._loss(tokens, targets), weight=targets.numel())

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_loss, "test")

    def _log_epoch(self, loss_metric, stage: str) -> None:
        nats = loss_metric.compute()
        loss_metric.reset()
        self.log_dict(
            {f"{stage}/loss": nats, f"{stage}/{self.bits_name}": nats / math.log(2), f"{stage}/perplexity": nats.exp()},
            prog_bar=stage == "val",
            sync_dist=False,  # MeanMetric.compute already reduced over ranks
        )

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # the metric objects of this epoch's steps
        self._log_epoch(self.val_loss, "val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # the metric objects of this epoch's steps
        self._log_epoch(self.test_loss, "test")
