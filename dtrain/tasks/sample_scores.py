"""How a generative task judges its samples, in one place for the GAN, the VAE and diffusion.

- 8x8 single-channel images (scikit-learn's digits): the cached digits classifier
  (dtrain.generative_score): `frechet_digits_distance` and `class_coverage`.
- other images, when `inception_weights` names a file of torch-fidelity's InceptionV3 weights
  on disk (never downloaded): torchmetrics' `fid` and `kid` (needs the `fid` extra).
- otherwise nothing: the task monitors a loss it defines itself.

Which applies is decided by the first real images of a split. Scores are kept in a plain object,
not as submodules: the frozen scoring nets stay out of training and checkpoints.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

DIGITS_SHAPE = (1, 8, 8)
CHUNK = 500  # samples generated at once


def is_digits_like(image_shape) -> bool:
    return tuple(image_shape) == DIGITS_SHAPE


class InceptionScore(nn.Module):
    """torchmetrics' FID and KID (Inception features), for images in [-1, 1] of 1 or 3 channels."""

    primary = "fid"

    def __init__(self, weights_path: str | Path, kid_subset_size: int = 100, features: int = 2048):
        """`features`: the Inception layer compared (2048, the pool features FID is defined on;
        64, 192 or 768 are earlier, cheaper ones, not comparable with published FIDs)."""
        super().__init__()
        from dtrain.config.errors import ConfigError

        if not Path(weights_path).is_file():
            raise ConfigError("model.inception_weights", f"{weights_path} is not a file; give torch-fidelity's InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth) saved on disk")
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise ConfigError("model.inception_weights", "FID and KID need torch-fidelity: pip install 'dtrain[fid]'")
        from torchmetrics.image.fid import NoTrainInceptionV3

        # one Inception for both metrics (KID takes no weights path of its own)
        inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(features)], feature_extractor_weights_path=str(weights_path))
        inception.num_features = features
        self.fid = FrechetInceptionDistance(feature=inception)
        self.kid = KernelInceptionDistance(feature=inception, subset_size=kid_subset_size)

    @staticmethod
    def _as_unit_rgb(images: torch.Tensor) -> torch.Tensor:
        """Bytes, 3 channels: Inception's input (it resizes to 299x299 itself)."""
        images = (((images.float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def update_real(self, images: torch.Tensor) -> None:
        images = self._as_unit_rgb(images)
        self.fid.update(images, real=True)
        self.kid.update(images, real=True)

    def update_fake(self, images: torch.Tensor) -> None:
        images = self._as_unit_rgb(images)
        self.fid.update(images, real=False)
        self.kid.update(images, real=False)

    def compute(self) -> dict[str, torch.Tensor]:
        counts = [sum(len(f) for f in features) for features in (self.kid.real_features, self.kid.fake_features)]
        self.kid.subset_size = min(self.kid.subset_size, *counts)
        scores = {"fid": self.fid.compute().float(), "kid": self.kid.compute()[0].float()}
        self.reset()
        return scores

    def reset(self) -> None:
        self.fid.reset()
        self.kid.reset()


class SampleScores:
    """One scorer per stage (val, test): real images go in at each step, `num_samples` generated
    ones at the end of the epoch."""

    def __init__(self, cache_dir: str | None, inception_weights: str | None, num_samples: int):
        self.cache_dir, self.inception_weights, self.num_samples = cache_dir, inception_weights, num_samples
        self._scorers: dict[str, nn.Module | None] = {}

    def _scorer(self, stage: str, images: torch.Tensor) -> nn.Module | None:
        if stage not in self._scorers:
            scorer = None
            if is_digits_like(images.shape[1:]) and self.cache_dir is not None:
                from dtrain.generative_score import SampleScore

                scorer = SampleScore(self.cache_dir)
            elif not is_digits_like(images.shape[1:]) and self.inception_weights is not None:
                scorer = InceptionScore(self.inception_weights, kid_subset_size=min(100, self.num_samples))
            self._scorers[stage] = scorer.to(images.device) if scorer is not None else None
        return self._scorers[stage]

    def scores(self, stage: str, images: torch.Tensor) -> bool:
        """Whether this stage's samples are scored (decided by its real images)."""
        return self._scorer(stage, images) is not None

    def primary(self, stage: str) -> str | None:
        """The score a best checkpoint can be chosen by (lower is better)."""
        scorer = self._scorers.get(stage)
        return None if scorer is None else getattr(scorer, "primary", "frechet_digits_distance")

    def update_real(self, stage: str, images: torch.Tensor) -> None:
        scorer = self._scorer(stage, images)
        if scorer is not None:
            scorer.update_real(images)

    def epoch_end(self, trainer, stage: str, sample: Callable[[int, int], torch.Tensor], first_chunk: Callable[[torch.Tensor], None] | None = None) -> dict[str, torch.Tensor] | None:
        """`{stage}/<score>` of `num_samples` samples (`sample(n, seed)`, in chunks of 500 with
        seeds 1, 501, ...: the same samples every epoch), or None when nothing is scored. The
        sanity check's one batch is forgotten, not scored. `first_chunk` sees the first samples
        drawn (a task saves its grid from them instead of sampling again)."""
        scorer = self._scorers.get(stage)
        if trainer.sanity_checking:
            if scorer is not None:
                scorer.reset()
            return None
        if scorer is None:
            return None
        for start in range(0, self.num_samples, CHUNK):
            samples = sample(min(CHUNK, self.num_samples - start), start + 1)
            scorer.update_fake(samples)
            if start == 0 and first_chunk is not None:
                first_chunk(samples)
        return {f"{stage}/{name}": value for name, value in scorer.compute().items()}


def seeded_normal(shape, seed: int, device) -> torch.Tensor:
    """Standard normal noise that depends on `seed` alone, drawn on `device`."""
    return torch.randn(shape, generator=torch.Generator(device=device).manual_seed(seed), device=device)
