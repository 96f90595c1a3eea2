"""Classification of a graph's nodes (the batch's `mask` picks the labelled ones) or of whole graphs."""

import torch.nn.functional as F

from dtrain.tasks.classification import Classification


class GraphClassification(Classification):
    """Classification's loss and metrics over torch_geometric batches: the net is called as
    net(x, edge_index, batch); node-level batches carry a boolean `mask` of the nodes to score."""

    def _logits_and_labels(self, data):
        logits = self.net(data.x, data.edge_index, getattr(data, "batch", None))
        mask = getattr(data, "mask", None)
        if mask is not None and logits.shape[0] == data.num_nodes:
            return logits[mask], data.y[mask]
        return logits, data.y

    def batch_counts(self, batch) -> dict:
        """Samples are the scored nodes of a node-level batch, the graphs of a graph-level one."""
        mask = getattr(batch, "mask", None)
        return {"samples": mask.sum() if mask is not None else batch.num_graphs}

    def training_step(self, batch, batch_idx):
        logits, y = self._logits_and_labels(batch)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.log_train("train/loss", loss)
        return loss

    def _evaluate(self, batch, metrics, loss_metric, stage: str) -> None:
        logits, y = self._logits_and_labels(batch)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        metrics.update(logits, y)
        self.log_at_epoch_end(f"{stage}/loss", loss_metric, prog_bar=True)
        self.log_at_epoch_end(f"{stage}/metrics", metrics, prog_bar=stage == "val")
