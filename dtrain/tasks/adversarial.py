"""Adversarial training of generative nets: DCGAN (non-saturating loss) and WGAN-GP (Wasserstein
critic with gradient penalty), with manual optimisation of a generator and a discriminator."""

import math

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from dtrain.tasks.sample_grid import save_grid
from dtrain.tasks.base import Task
from dtrain.tasks.sample_scores import SampleScores, seeded_normal

EVAL_NOISE_SEED = 1_000_000  # seeds of the noise validation and test batches are judged on (the scores' samples use 1, 501, ...)


class Adversarial(Task):
    """The net (dtrain.nets.gan.GAN or alike) has `generator`, `discriminator` and `latent_dim`.

    `loss="gan"`: the discriminator is trained with binary cross-entropy on real vs generated
    images, the generator with the non-saturating loss. `loss="wgan_gp"`: the critic minimises
    D(fake) - D(real) + `gradient_penalty` * (|grad D(mix)| - 1)^2 and the generator is
    updated once per `critic_steps` critic updates. Both nets use `model.optimizer`
    (`model.generator_optimizer`, when given, for the generator).

    Generated images are scored (dtrain.tasks.sample_scores): 8x8 digits by the cached digits
    classifier (`val/frechet_digits_distance`, `val/class_coverage`), other images by FID/KID
    when `inception_weights` is given; the main score is also logged as `val/loss`, so the best
    checkpoint is the one whose samples are closest to the real images. Where nothing scores
    the samples, `val/loss` is `val/critic_divergence`, always logged: the critic's estimate of
    the divergence between the split's images and samples of fixed noise (WGAN: the Wasserstein
    estimate E D(real) - E D(fake); GAN: log 4 minus the discriminator's loss, 2 JSD for an
    optimal discriminator); lower is better. Likewise for test.
    """

    def __init__(
        self,
        net,
        optimizer,
        cache_dir: str,
        loss: str = "gan",
        critic_steps: int = 1,
        gradient_penalty: float = 10.0,
        generator_optimizer=None,
        num_score_samples: int = 1000,
        inception_weights: str | None = None,
        scheduler=None,
        **options,
    ):
        if loss not in ("gan", "wgan_gp"):
            raise ValueError(f"unknown loss {loss!r}; use gan or wgan_gp")
        super().__init__(net, optimizer, scheduler, **options)  # init_from, decay_norms_and_biases
        self.automatic_optimization = False
        self.loss, self.critic_steps, self.gradient_penalty = loss, critic_steps, gradient_penalty
        self.batch_cycle = critic_steps  # the generator steps once per critic_steps batches
        self.generator_optimizer_factory = generator_optimizer or optimizer
        self.cache_dir, self.num_score_samples = cache_dir, num_score_samples
        self.scores = SampleScores(cache_dir, inception_weights, num_score_samples)
        self.val_divergence, self.test_divergence = MeanMetric(), MeanMetric()

    def configure_optimizers(self):
        critic = self.optimizer_factory(params=self.parameter_groups(self.net.discriminator))
        generator = self.generator_optimizer_factory(params=self.parameter_groups(self.net.generator))
        return [critic, generator]

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.net.latent_dim, device=self.device)

    def training_step(self, batch, batch_idx):
        real, _ = batch
        critic_opt, generator_opt = self.optimizers()
        fake = self.net.generator(self._noise(len(real)))

        d_real, d_fake = self.net.discriminator(real), self.net.discriminator(fake.detach())
        if self.loss == "gan":
            critic_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        else:
            critic_loss = d_fake.mean() - d_real.mean() + self.gradient_penalty * self._penalty(real, fake.detach())
        critic_opt.zero_grad()
        self.manual_backward(critic_loss)
        critic_opt.step()
        self.log_train("train/critic_loss", critic_loss, prog_bar=False)

        if (batch_idx + 1) % self.critic_steps == 0:
            d_fake = self.net.discriminator(fake)
            if self.loss == "gan":
                generator_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            else:
                generator_loss = -d_fake.mean()
            generator_opt.zero_grad()
            self.manual_backward(generator_loss)
            generator_opt.step()
            self.log_train("train/loss", generator_loss)

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        mix = torch.rand(len(real), 1, 1, 1, device=self.device)
        mixed = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.net.discriminator(mixed).sum(), mixed, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self.net.generator(seeded_normal((n, self.net.latent_dim), seed, self.device))

    # -- evaluation: real images of the split against generated ones -------------------------
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        real = batch[0]
        self.scores.update_real(stage, real)
        d_real = self.net.discriminator(real)
        d_fake = self.net.discriminator(self.sample(len(real), seed=EVAL_NOISE_SEED + batch_idx))  # fixed noise: epochs compare
        if self.loss == "gan":
            critic_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            divergence = math.log(4) - critic_loss
        else:
            divergence = d_real.mean() - d_fake.mean()
        metric = getattr(self, f"{stage}_divergence")
        metric.update(divergence, weight=len(real))
        self.log_at_epoch_end(f"{stage}/critic_divergence", metric)
        if not self.scores.scores(stage, real):
            self.log_at_epoch_end(f"{stage}/loss", metric, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def _epoch_end(self, stage: str) -> None:
        if self.trainer.sanity_checking:  # one batch only: nothing worth scoring or saving
            self.scores.epoch_end(self.trainer, stage, self.sample)
            return
        self.net.generator.eval()
        scores = self.scores.epoch_end(self.trainer, stage, self.sample)
        if scores:
            scores[f"{stage}/loss"] = scores[f"{stage}/{self.scores.primary(stage)}"]
            self.log_dict(scores, prog_bar=True)
        save_grid(self.trainer, self.sample(64), f"samples-{f'epoch{self.current_epoch:03d}' if stage == 'val' else 'test'}")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # the metric objects of this epoch's steps
        self._epoch_end("test")
