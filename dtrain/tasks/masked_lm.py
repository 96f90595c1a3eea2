"""Masked-token pretraining (BERT-style): hide a fraction of tokens, predict them from both sides."""

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dtrain.tasks.base import Task


class MaskedLanguageModel(Task):
    """Batches are (tokens, anything); `mask_prob` of the tokens are replaced by `mask_token` and
    the net (non-causal) is scored on those positions only. The net exposes `features(tokens)`
    (batch, length, width) and `head(states)` -> logits over vocab_size, so the head, as wide as
    the vocabulary, runs on the masked positions alone. Validation and test masks depend on the
    batch index alone, so every epoch sees the same ones."""

    def __init__(self, net, optimizer, mask_token: int, vocab_size: int, mask_prob: float = 0.15, scheduler=None, **options):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.mask_token, self.mask_prob = mask_token, mask_prob
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_masked_acc", MulticlassAccuracy(vocab_size, average="micro"))

    def _masked(self, tokens: torch.Tensor, generator: torch.Generator | None = None):
        chosen = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device) < self.mask_prob
        if self.training:
            self._masked_tokens = chosen.sum()  # for batch_counts; stays on the device
        states = self.net.features(tokens.masked_fill(chosen, self.mask_token))
        return self.net.head(states[chosen]), tokens[chosen]

    def batch_counts(self, batch) -> dict:
        return {**super().batch_counts(batch), "masked_tokens": getattr(self, "_masked_tokens", 0)}

    def training_step(self, batch, batch_idx):
        logits, targets = self._masked(batch[0])
        loss = F.cross_entropy(logits, targets)
        self.log_train("train/loss", loss)
        return loss

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        logits, targets = self._masked(batch[0], torch.Generator().manual_seed(batch_idx))
        loss, acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_masked_acc")
        loss.update(F.cross_entropy(logits, targets), weight=len(targets))
        acc.update(logits, targets)
        self.log_at_epoch_end(f"{stage}/loss", loss, prog_bar=True)
        self.log_at_epoch_end(f"{stage}/masked_acc", acc, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")
