"""How good generated digits are, judged by a digits classifier dtrain trains once and caches:
how many classes the samples cover, and the Fréchet distance between real and generated images
in that classifier's feature space (the idea of FID, with a digits classifier, not Inception).
Meaningful for scikit-learn's 8x8 digits only: dtrain.tasks.sample_scores uses it for them alone."""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

CLASSIFIER_FILE = "digits_classifier_v1.pt"
NUM_CLASSES = 10


def _classifier_net() -> nn.Module:
    # A CNN, not an MLP: an MLP calls uniform noise nine different digits, this one three.
    from dtrain.nets.cnn import ConvNet

    return ConvNet(in_channels=1, num_classes=NUM_CLASSES, channels=[32, 64], hidden=128, dropout=0.1)


def train_digits_classifier(epochs: int = 15, seed: int = 0) -> tuple[nn.Module, float]:
    """A ConvNet trained on the 8x8 digits' training split (the split every digits run uses, so the
    test images it is judged on were never seen); returns it and its test accuracy."""
    from dtrain.data.digits import DigitsDataModule

    data = DigitsDataModule()
    data.setup()
    x, y = data.train_set.tensors
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only wait on each other's threads (badly so on a busy CPU)
    try:
        net = _fit(x, y, epochs, seed, generator)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    x_test, y_test = data.test_set.tensors
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    return net, accuracy


def _fit(x, y, epochs: int, seed: int, generator: torch.Generator) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _classifier_net()
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
        steps = epochs * -(-len(y) // 64)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=generator).split(64):
                # small random shifts make it robust to generated digits that are a pixel off
                shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
                loss = F.cross_entropy(net(torch.roll(x[idx], shifts=shift, dims=(2, 3))), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    return net


def digits_classifier(cache_dir: str | Path) -> nn.Module:
    """The cached classifier (trained and written atomically on first use), in eval mode, frozen."""
    path = Path(cache_dir) / CLASSIFIER_FILE
    net = _classifier_net()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    except (FileNotFoundError, RuntimeError, KeyError, EOFError):  # absent, stale or cut short: retrain
        with torch.inference_mode(False), torch.enable_grad():  # first use comes inside Lightning's validation
            net, accuracy = train_digits_classifier()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), "test_accuracy": accuracy}, tmp)
        os.replace(tmp, path)  # concurrent runs each write a whole file; readers never see half of one
    return net.eval().requires_grad_(False)


def as_digits(images: torch.Tensor) -> torch.Tensor:
    """Digits in [-1, 1] (batch, 1, 8, 8), clamped; anything else is refused: the classifier
    says nothing about other images."""
    if tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"the digits score takes 1x8x8 digits, not images of shape {tuple(images.shape[1:])}")
    return images.clamp(-1, 1)


class DigitsFeatures(nn.Module):
    """The classifier's penultimate layer: the feature space the Fréchet distance is measured in."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.head[2].out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.head[:4](self.classifier.features(as_digits(images)))


class ClassCoverage(Metric):
    """How many classes the classifier finds among generated images. A class counts as covered
    when it gets at least `min_share` of its fair share (1/num_classes) of the samples, so a
    handful of stray samples does not count."""

    full_state_update = False

    def __init__(self, classifier: nn.Module, min_share: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.min_share = min_share
        self.add_state("counts", torch.zeros(NUM_CLASSES), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor) -> None:
        predicted = self.classifier(as_digits(images)).argmax(dim=1)
        self.counts += torch.bincount(predicted, minlength=NUM_CLASSES).to(self.counts)

    def compute(self) -> torch.Tensor:
        share = self.counts / self.counts.sum().clamp(min=1)
        return (share >= self.min_share / NUM_CLASSES).sum().float()


class SampleScore(nn.Module):
    """Real images of one split against generated ones: `frechet_digits_distance` (lower is
    better; 0 for identical statistics) and `class_coverage` (0-10 classes)."""

    def __init__(self, cache_dir: str | Path):
        super().__init__()
        classifier = digits_classifier(cache_dir)
        self.frechet = FrechetInceptionDistance(feature=DigitsFeatures(classifier))
        self.coverage = ClassCoverage(classifier)

    def update_real(self, images: torch.Tensor) -> None:
        self.frechet.update(images.float(), real=True)

    def update_fake(self, images: torch.Tensor) -> None:
        self.frechet.update(images.float(), real=False)
        self.coverage.update(images.float())

    def compute(self) -> dict[str, torch.Tensor]:
        scores = {"frechet_digits_distance": self.frechet.compute().float(), "class_coverage": self.coverage.compute()}
        self.reset()
        return scores

    def reset(self) -> None:
        self.frechet.reset()
        self.coverage.reset()
