"""Denoising diffusion (DDPM): learn to predict the noise added at a random step; sample by
running the reverse chain, optionally on an evenly spaced subset of the steps."""

import math

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from dtrain.tasks.sample_grid import save_grid
from dtrain.tasks.base import Task
from dtrain.tasks.sample_scores import SampleScores


def cosine_alpha_bars(timesteps: int) -> torch.Tensor:
    """The fraction of signal left after each step (Nichol & Dhariwal's cosine schedule)."""
    s = 0.008
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


class Diffusion(Task):
    """The net maps (noised images, steps) to the predicted noise (dtrain.nets.unet.UNet).

    `val/loss` and `test/loss` are the noise-prediction error on the split (with fixed noise,
    so epochs compare). Each validation and the test also score `num_score_samples` samples
    (dtrain.tasks.sample_scores: 8x8 digits by the cached digits classifier,
    `val/frechet_digits_distance` and `val/class_coverage`; other images by FID/KID when
    `inception_weights` is given; likewise for test; so a run can stop once its samples are good
    enough) and save a grid of them. `sample_steps` < `timesteps` samples on evenly spaced
    steps (the respaced DDPM chain), which is much cheaper.
    """

    def __init__(
        self,
        net,
        optimizer,
        image_shape: list[int],
        cache_dir: str | None = None,
        timesteps: int = 1000,
        sample_steps: int = 100,
        num_score_samples: int = 1000,
        inception_weights: str | None = None,
        ema_decay: float | None = 0.995,
        scheduler=None,
        **options,
    ):
        # plain ints, not Hydra's ListConfig: the saved hyperparameters must load with weights_only
        image_shape = [int(size) for size in image_shape]
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.image_shape = tuple(image_shape)
        self.timesteps, self.sample_steps = timesteps, sample_steps
        self.cache_dir, self.num_score_samples = cache_dir, num_score_samples
        self.register_buffer("alpha_bars", cosine_alpha_bars(timesteps).float(), persistent=False)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # An exponential moving average of the weights samples much better than the raw weights.
        self.ema = None
        if ema_decay is not None:
            self.ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay))
            self.ema.requires_grad_(False)
        self.scores = SampleScores(cache_dir, inception_weights, num_score_samples)

    def noise_loss(self, x: torch.Tensor, generator: torch.Generator | None = None, net=None) -> torch.Tensor:
        # Drawn where it is used (no copy each step); in training from the device's default
        # generator, which StepSeed seeds before every batch.
        t = torch.randint(0, self.timesteps, (len(x),), generator=generator, device=x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        a = self.alpha_bars[t].view(-1, 1, 1, 1)
        noised = a.sqrt() * x + (1 - a).sqrt() * noise
        return F.mse_loss((net or self.net)(noised, t), noise)

    def training_step(self, batch, batch_idx):
        loss = self.noise_loss(batch[0])
        self.log_train("train/loss", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def _denoiser(self):
        return self.ema.module if self.ema is not None else self.net

    def _evaluate(self, batch, batch_idx, metric, stage):
        x = batch[0]
        fixed = torch.Generator(device=x.device).manual_seed(batch_idx)
        metric.update(self.noise_loss(x, fixed, net=self._denoiser()), weight=len(x))
        self.log_at_epoch_end(f"{stage}/loss", metric, prog_bar=True)
        self.scores.update_real(stage, x)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, self.val_loss, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, self.test_loss, "test")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """Ancestral DDPM sampling on `sample_steps` evenly spaced steps of the training chain."""
        net = self._denoiser()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        steps = torch.linspace(self.timesteps - 1, 0, self.sample_steps).round().long().unique_consecutive()
        x = torch.randn((n, *self.image_shape), generator=generator, device=self.device)
        for i, t in enumerate(steps.tolist()):
            a_t = self.alpha_bars[t]
            a_prev = self.alpha_bars[steps[i + 1]] if i + 1 < len(steps) else torch.ones_like(a_t)
            beta = 1 - a_t / a_prev
            eps = net(x, torch.full((n,), t, device=self.device))
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            # the posterior q(x_prev | x_t, x0) of the respaced chain
            mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
            if i + 1 < len(steps):
                var = beta * (1 - a_prev) / (1 - a_t)
                x = mean + var.sqrt() * torch.randn(x.shape, generator=generator, device=self.device)
            else:
                x = mean
        return x.clamp(-1, 1)

    def _epoch_end(self, stage: str) -> None:
        name = f"samples-epoch{self.current_epoch:03d}" if stage == "val" else "samples-test"
        scores = self.scores.epoch_end(self.trainer, stage, self.sample, first_chunk=lambda samples: save_grid(self.trainer, samples[:64], name))
        if self.trainer.sanity_checking:  # one batch only: nothing worth scoring or saving
            return
        if scores is None:
            save_grid(self.trainer, self.sample(64), name)
        else:
            self.log_dict(scores)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("test")
