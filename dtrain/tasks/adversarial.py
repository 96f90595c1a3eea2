"""Adversarial training of generative nets: DCGAN (non-saturating loss) and WGAN-GP (Wasserstein
critic with gradient penalty), with manual optimisation of a generator and a discriminator."""

import torch
import torch.nn.functional as F

from dtrain.callbacks.samples import save_grid
from dtrain.tasks.base import Task


class Adversarial(Task):
    """The net (dtrain.nets.gan.GAN or alike) has `generator`, `discriminator` and `latent_dim`.

    `loss="gan"`: the discriminator is trained with binary cross-entropy on real vs generated
    images, the generator with the non-saturating loss. `loss="wgan_gp"`: the critic minimises
    D(fake) - D(real) + `gradient_penalty` * (|grad D(mix)| - 1)^2 and the generator is
    updated once per `critic_steps` critic updates. Both nets use `model.optimizer`
    (`model.generator_optimizer`, when given, for the generator).

    Generated images are judged by the cached digits classifier (dtrain.generative_score):
    `val/frechet_digits_distance` (also logged as `val/loss`, so the best checkpoint is the one
    whose samples are closest to the real images) and `val/class_coverage`; likewise for test.
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
        scheduler=None,
    ):
        if loss not in ("gan", "wgan_gp"):
            raise ValueError(f"unknown loss {loss!r}; use gan or wgan_gp")
        super().__init__(net, optimizer, scheduler)
        self.automatic_optimization = False
        self.loss, self.critic_steps, self.gradient_penalty = loss, critic_steps, gradient_penalty
        self.batch_cycle = critic_steps  # the generator steps once per critic_steps batches
        self.generator_optimizer_factory = generator_optimizer or optimizer
        self.cache_dir, self.num_score_samples = cache_dir, num_score_samples
        self._scores = {}  # a plain dict: the frozen classifier stays out of training and checkpoints

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
        z = torch.randn(n, self.net.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        return self.net.generator(z)

    # -- evaluation: real images of the split against generated ones -------------------------
    def _score(self, stage: str):
        from dtrain.generative_score import SampleScore

        if stage not in self._scores:
            self._scores[stage] = SampleScore(self.cache_dir).to(self.device)
        return self._scores[stage]

    def validation_step(self, batch, batch_idx):
        self._score("val").update_real(batch[0])

    def test_step(self, batch, batch_idx):
        self._score("test").update_real(batch[0])

    def _epoch_end(self, stage: str) -> None:
        if self.trainer.sanity_checking:  # one batch only: nothing worth scoring or saving
            if stage in self._scores:
                self._scores[stage].reset()
            return
        self.net.generator.eval()
        score = self._score(stage)
        for chunk in range(0, self.num_score_samples, 500):
            score.update_fake(self.sample(min(500, self.num_score_samples - chunk), seed=chunk + 1))
        scores = {f"{stage}/{k}": v for k, v in score.compute().items()}
        scores[f"{stage}/loss"] = scores[f"{stage}/frechet_digits_distance"]
        self.log_dict(scores, prog_bar=True)
        save_grid(self.trainer, self.sample(64), f"samples-{f'epoch{self.current_epoch:03d}' if stage == 'val' else 'test'}")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
