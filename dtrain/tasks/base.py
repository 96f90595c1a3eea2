"""What every task shares: the net and its starting weights, the optimizer and schedule from
config, lean loss logging."""

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection


class Task(L.LightningModule):
    """A LightningModule around a plain `net`.

    `optimizer` is a partial taking the parameters (`model.optimizer` in the config);
    `scheduler` an optional partial taking the optimizer and, when it asks for it, the run's
    number of optimizer steps (`total_steps`). Subclasses define the steps and metrics: an
    evaluation step updates its torchmetrics objects and notes them with `log_at_epoch_end`,
    and a subclass that has its own `on_validation_epoch_end` or `on_test_epoch_end` calls
    the Task's first.

    Every task also accepts `init_from` (a checkpoint of another run, e.g. a masked-LM
    pretraining: every net weight whose name and shape match is copied in, a new head keeps its
    initialisation). How the net is split, checkpointed and compiled is not the task's business
    (dtrain.parallel.parallelize).

    Weight decay applies to the weights of matrix multiplications and convolutions (and
    embeddings) only: biases and normalisation weights (every parameter with fewer than 2
    dimensions, noted while their shapes are whole) form a group without decay, as nanoGPT's
    `configure_optimizers` does.
    `decay_norms_and_biases=true` decays every parameter alike (one group).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        init_from: str | None = None,
        decay_norms_and_biases: bool = False,
    ):
        super().__init__()
        # The plain arguments travel in checkpoints; the net and the optimizer factories are
        # rebuilt from the run's config.yaml (dtrain logs the whole config itself).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decay_norms_and_biases = decay_norms_and_biases
        self._epoch_metrics: dict[str, tuple[Metric | MetricCollection, bool]] = {}  # see log_at_epoch_end
        if init_from is not None:
            load_matching_weights(self.net, init_from)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self, module: nn.Module) -> list:
        """The optimizer's parameter groups for `module`'s parameters (see the class docstring)."""
        return decay_groups(module, decay_norms_and_biases=self.decay_norms_and_biases)

    def log_train(self, name: str, value: torch.Tensor, prog_bar: bool = True) -> None:
        """Log a training value only on the steps the loggers write, sparing every other step
        the logging machinery (Lightning's rule: batches, not optimizer steps, which a GAN
        takes two of per batch)."""
        from dtrain.perf.steps import is_logging_step

        if is_logging_step(self.trainer):
            self.log(name, value, on_step=True, on_epoch=False, prog_bar=prog_bar)

    def log_at_epoch_end(self, name: str, metric: Metric | MetricCollection, prog_bar: bool = False) -> None:
        """Log `metric`, a torchmetrics object an evaluation step has just updated, once, when this
        validation or test epoch ends: the value over the whole epoch, as Lightning gives a metric
        object logged at every step, without Lightning's logging at every step (0.4 ms a call on
        a CPU: 2.5 ms a validation batch for a classifier's loss and five metrics, 40% of its
        validation time on a small MLP). A MetricCollection is logged under its own names."""
        self._epoch_metrics[name] = (metric, prog_bar)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics()

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics()

    def _log_epoch_metrics(self) -> None:
        if self.trainer.sanity_checking:
            self._compute_quietly()
        for name, (metric, prog_bar) in self._epoch_metrics.items():
            if isinstance(metric, MetricCollection):
                self.log_dict(metric, prog_bar=prog_bar)
            else:
                self.log(name, metric, prog_bar=prog_bar)
        self._epoch_metrics.clear()

    def _compute_quietly(self) -> None:
        """The sanity check's few batches (2 by default) often lack a class, which torchmetrics
        warns of on every run ("No positive samples in targets", ...): meaningless there. Its
        metrics compute here with warnings silenced; torchmetrics keeps each result until the
        next update, and Lightning logs that kept value (callbacks read it until the check ends)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for metric, _ in self._epoch_metrics.values():
                metric.compute()  # synced across ranks, as Lightning's own compute would

    # Training steps repeat with this period in batch_idx (a GAN steps its generator once every
    # `critic_steps` batches): the FLOPs of a training batch are averaged over one period.
    batch_cycle = 1

    def batch_counts(self, batch) -> dict:
        """What one training batch holds, for the throughput figures: {"samples": n}, plus
        "tokens" (the input tokens the net processes, padding excluded) for sequences. Values
        may be tensors left on the device: they are read on logging steps only."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        counts = {"samples": len(x)}
        tokens = sequence_tokens(x)
        if tokens is not None:
            counts["tokens"] = tokens
        return counts


NO_DECAY = "_dtrain_no_decay"


def mark_no_decay(module: nn.Module) -> None:
    """Note on each parameter whether it is a bias or normalisation weight (fewer than 2
    dimensions) while its shape is whole: sharding may later keep the same parameter objects as
    flat 1-d pieces, which would all look like biases. dtrain.parallel calls it before it splits
    anything; an unmarked parameter is judged by its shape."""
    for p in module.parameters():
        setattr(p, NO_DECAY, p.dim() < 2)


def decay_groups(module: nn.Module, decay_norms_and_biases: bool = False) -> list:
    """Parameters with 2 or more dimensions decay (the optimizer's weight_decay); biases and
    normalisation weights go in a group with weight_decay 0, marked `no_decay` (so a sweep that
    changes weight decay leaves it at 0). Empty groups are left out."""
    params = list(module.parameters())
    if decay_norms_and_biases:
        return params
    spared = [getattr(p, NO_DECAY, p.dim() < 2) for p in params]
    groups = [
        {"params": [p for p, no in zip(params, spared) if not no]},
        {"params": [p for p, no in zip(params, spared) if no], "weight_decay": 0.0, "no_decay": True},
    ]
    return [group for group in groups if group["params"]]


def sequence_tokens(x, padding_id: int | None = None):
    """Tokens in a batch of sequences: token ids (batch, length) or vectors (batch, time,
    features), one per position; None for anything else (images, feature vectors)."""
    if not isinstance(x, torch.Tensor):
        return None
    if not x.is_floating_point() and x.dim() == 2:
        return x.numel() if padding_id is None else (x != padding_id).sum()
    if x.is_floating_point() and x.dim() == 3:
        return x.shape[0] * x.shape[1]
    return None


def load_matching_weights(net: nn.Module, checkpoint: str) -> list[str]:
    """Copy into `net` the weights of the checkpoint's net (a Lightning checkpoint of a dtrain
    task) whose names and shapes match; returns the names of the net's weights left as they were.
    A checkpoint sharing no weight with the net is an error, not a silent fresh start."""
    from dtrain.checkpoints import TRUST_KEY, NotACheckpoint, UnsafeCheckpoint, load_checkpoint
    from dtrain.config.errors import ConfigError

    if not Path(checkpoint).is_file():
        raise ConfigError("model.init_from", f"{checkpoint} is not a checkpoint file; give a run's checkpoints/<name>.ckpt")
    try:
        state = load_checkpoint(checkpoint)["state_dict"]
    except UnsafeCheckpoint as unsafe:
        raise ConfigError("model.init_from", f"refused: {unsafe}; load it only if you trust it, with {TRUST_KEY}=true") from None
    except NotACheckpoint as error:
        raise ConfigError("model.init_from", f"{error}; give a run's checkpoints/<name>.ckpt") from None
    own = net.state_dict()
    matching = {name: value for key, value in state.items() if key.startswith("net.") and (name := key[4:]) in own and own[name].shape == value.shape}
    if not matching:
        raise ConfigError("model.init_from", f"{checkpoint} holds no weight matching this net's names and shapes")
    net.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))
