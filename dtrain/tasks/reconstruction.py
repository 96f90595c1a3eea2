"""Reconstruction: autoencoders (mean squared error, anomaly detection by reconstruction error)
and variational autoencoders (ELBO, samples, latent interpolations)."""

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from dtrain.tasks.sample_grid import save_grid
from dtrain.tasks.base import Task
from dtrain.tasks.sample_scores import SampleScores, seeded_normal


class Reconstruction(Task):
    """The net (dtrain.nets.autoencoder.AutoEncoder or alike) maps images to
    (pixel logits, latent mean, latent log-variance or None); images are in [-1, 1].

    - autoencoder (`net.variational` false): loss = per-image squared error of tanh(logits / 2).
    - VAE: loss = -ELBO in nats per image, with a Bernoulli likelihood of pixel intensities
      (x + 1) / 2 and a standard normal prior; `val/elbo`, `val/kl` and `val/reconstruction`
      are logged, and sample and interpolation grids are saved every validation.

    `anomaly_class` (e.g. the digit the datamodule held out of training): validation and test
    also report `auroc` of the per-image loss for telling that class from the others; `loss`
    is then measured on the other classes only.
    """

    def __init__(
        self, net, optimizer, scheduler=None, anomaly_class: int | None = None, beta: float = 1.0, cache_dir: str | None = None,
        num_score_samples: int = 1000, inception_weights: str | None = None,
        **options,
    ):
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.anomaly_class, self.beta = anomaly_class, beta
        self.cache_dir, self.num_score_samples = cache_dir, num_score_samples
        self.variational = bool(getattr(net, "variational", False))
        parts = ["loss", "elbo", "kl", "reconstruction"] if self.variational else ["loss"]
        for stage in ("val", "test"):
            for part in parts:
                setattr(self, f"{stage}_{part}", MeanMetric())
            if anomaly_class is not None:
                setattr(self, f"{stage}_auroc", BinaryAUROC())
        self.scores = SampleScores(cache_dir, inception_weights, num_score_samples)

    def per_image_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, mean, logvar = self.net(x)
        if not self.variational:
            return {"loss": (torch.tanh(logits / 2) - x).pow(2).flatten(1).sum(1)}
        reconstruction = F.binary_cross_entropy_with_logits(logits, (x + 1) / 2, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return {"loss": reconstruction + self.beta * kl, "elbo": -(reconstruction + kl), "kl": kl, "reconstruction": reconstruction}

    def training_step(self, batch, batch_idx):
        x, _ = batch
        loss = self.per_image_loss(x)["loss"].mean()
        self.log_train("train/loss", loss)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        losses = self.per_image_loss(x)
        normal = torch.ones_like(y, dtype=torch.bool) if self.anomaly_class is None else y != self.anomaly_class
        for part, values in losses.items():
            if normal.any():
                getattr(self, f"{stage}_{part}").update(values[normal])
            self.log_at_epoch_end(f"{stage}/{part}", getattr(self, f"{stage}_{part}"), prog_bar=part in ("loss", "elbo"))
        if self.anomaly_class is not None:
            auroc = getattr(self, f"{stage}_auroc")
            auroc.update(losses["loss"], (~normal).long())
            self.log_at_epoch_end(f"{stage}/auroc", auroc, prog_bar=True)
        if self.variational:
            self.scores.update_real(stage, x)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    # -- VAE samples ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.tanh(self.net.decode(seeded_normal((n, self.net.latent_dim), seed, self.device)) / 2)

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Rows of decoded images along the straight line between the latent means of a[i] and b[i]."""
        za, zb = self.net.encode(a)[0], self.net.encode(b)[0]
        weights = torch.linspace(0, 1, steps, device=self.device)[None, :, None]
        z = (1 - weights) * za[:, None] + weights * zb[:, None]
        return torch.tanh(self.net.decode(z.flatten(0, 1)) / 2)

    def _epoch_end(self, stage: str) -> None:
        if not self.variational:
            return
        if self.trainer.sanity_checking:  # one batch only: nothing worth scoring or saving
            self.scores.epoch_end(self.trainer, stage, self.sample)  # forgets the batch
            return
        name = f"epoch{self.current_epoch:03d}" if stage == "val" else "test"
        save_grid(self.trainer, self.sample(64), f"samples-{name}")
        split = self.trainer.datamodule.val_set if stage == "val" else self.trainer.datamodule.test_set
        items = [split[i] for i in range(min(len(split), 500))]
        x, y = torch.stack([item[0] for item in items]), torch.as_tensor([int(item[1]) for item in items])
        # interpolate between the first examples of different classes: 0->1, 1->2, ...
        firsts = [int((y == c).nonzero()[0]) for c in range(int(y.max()) + 1) if (y == c).any()]
        a, b = x[firsts[:-1]].to(self.device), x[firsts[1:]].to(self.device)
        save_grid(self.trainer, self.interpolate(a, b), f"interpolation-{name}", nrow=8)
        scores = self.scores.epoch_end(self.trainer, stage, self.sample)
        if scores:
            self.log_dict(scores)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("test")
