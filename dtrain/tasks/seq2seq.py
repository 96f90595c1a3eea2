"""Sequence to sequence: teacher-forced cross-entropy; greedy decoding scored by exact match."""

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dtrain.tasks.base import Task


class Seq2Seq(Task):
    """Batches are (source, target) with target[:, 0] the start token; the net is called as
    net(target_prefix, source=source) -> logits (batch, prefix length, vocab_size)."""

    def __init__(self, net, optimizer, vocab_size: int, scheduler=None, **options):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_token_acc", MulticlassAccuracy(vocab_size, average="micro"))
            setattr(self, f"{stage}_exact", MeanMetric())

    def _loss(self, source, target):
        logits = self.net(target[:, :-1], source=source)
        return F.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten())

    def batch_counts(self, batch) -> dict:
        source, target = batch
        return {"samples": len(source), "tokens": source.numel() + target[:, :-1].numel()}  # encoder + decoder inputs

    def training_step(self, batch, batch_idx):
        loss = self._loss(*batch)
        self.log_train("train/loss", loss)
        return loss

    @torch.no_grad()
    def generate(self, source: torch.Tensor, start: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy decoding: (batch, steps) predicted tokens after `start` (batch, 1)."""
        tokens = start
        for _ in range(steps):
            next_token = self.net(tokens, source=source)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens[:, 1:]

    def _evaluate(self, batch, stage: str) -> None:
        source, target = batch
        loss, token_acc, exact = (getattr(self, f"{stage}_{m}") for m in ("loss", "token_acc", "exact"))
        loss.update(self._loss(source, target), weight=target[:, 1:].numel())
        predicted = self.generate(source, target[:, :1], target.shape[1] - 1)
        token_acc.update(predicted.flatten(), target[:, 1:].flatten())
        exact.update((predicted == target[:, 1:]).all(dim=1).float())
        self.log_at_epoch_end(f"{stage}/loss", loss, prog_bar=True)
        self.log_at_epoch_end(f"{stage}/token_acc", token_acc)
        self.log_at_epoch_end(f"{stage}/exact_match", exact, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")
