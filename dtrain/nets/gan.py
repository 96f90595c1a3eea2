"""DCGAN-style generator and discriminator; `critic_norm` picks batch norm (DCGAN) or layer norm
(the WGAN-GP critic, whose gradient penalty needs per-sample gradients that batch norm would mix)."""

import math

import torch
from torch import nn


def _levels(image_size: int) -> int:
    levels = math.log2(image_size / 4)
    if image_size < 8 or levels != int(levels):
        raise ValueError(f"image_size must be 4 * 2^k and at least 8, got {image_size}")
    return int(levels)


class Generator(nn.Module):
    """Latent vector -> 4x4 feature map -> k transposed-conv doublings -> image in [-1, 1]."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, width: int = 64):
        super().__init__()
        k = _levels(image_size)
        c = width * 2**k
        layers: list[nn.Module] = [
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, c, 4, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
        ]
        for _ in range(k):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.Conv2d(c, out_channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """Image -> k strided-conv halvings to 4x4 -> one score (a logit, or a WGAN critic value)."""

    def __init__(self, in_channels: int, image_size: int, width: int = 64, norm: str = "batch"):
        super().__init__()
        k = _levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(k):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=norm == "none"), _norm(norm, 2 * c), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, 4), nn.Flatten(0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalises each sample on its own
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use batch, layer or none")


class GAN(nn.Module):
    """A generator and a discriminator (critic) trained against each other by dtrain.tasks.adversarial."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 64, critic_norm: str = "batch"):
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = Generator(latent_dim, channels, image_size, width)
        self.discriminator = Discriminator(channels, image_size, width, critic_norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)
