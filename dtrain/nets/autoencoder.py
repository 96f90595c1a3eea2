"""Autoencoders for images: an MLP or a small conv encoder/decoder; `variational=True` makes it a VAE."""

import torch
from torch import nn


class AutoEncoder(nn.Module):
    """Encoder -> latent -> decoder. The decoder returns per-pixel *logits* of intensity: the image
    in [-1, 1] is tanh(logits / 2) (= 2 sigmoid(logits) - 1), and a VAE reads them as a Bernoulli
    likelihood. With `variational=True` the encoder gives a Gaussian (mean, log-variance) and
    `forward` draws the latent from it; otherwise the latent is the mean and log-variance is None.

    `kind="mlp"` flattens the image (any size); `kind="conv"` halves the image twice with strided
    convolutions (image_size divisible by 4).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        latent_dim: int = 16,
        hidden: int = 256,
        variational: bool = False,
        kind: str = "mlp",
    ):
        super().__init__()
        self.shape = (in_channels, image_size, image_size)
        self.latent_dim, self.variational = latent_dim, variational
        out = 2 * latent_dim if variational else latent_dim
        if kind == "mlp":
            pixels = in_channels * image_size**2
            self.encoder = nn.Sequential(
                nn.Flatten(), nn.Linear(pixels, hidden), nn.SiLU(), nn.Linear(hidden, hidden // 2), nn.SiLU(), nn.Linear(hidden // 2, out)
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, hidden // 2), nn.SiLU(), nn.Linear(hidden // 2, hidden), nn.SiLU(), nn.Linear(hidden, pixels),
                nn.Unflatten(1, self.shape),
            )
        elif kind == "conv":
            if image_size % 4:
                raise ValueError(f"a conv autoencoder needs image_size divisible by 4, got {image_size}")
            c, small = hidden // 4, image_size // 4
            self.encoder = nn.Sequential(
                nn.Conv2d(in_channels, c, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
                nn.Flatten(), nn.Linear(2 * c * small**2, out),
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, 2 * c * small**2), nn.SiLU(), nn.Unflatten(1, (2 * c, small, small)),
                nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),
                nn.ConvTranspose2d(c, in_channels, 4, stride=2, padding=1),
            )
        else:
            raise ValueError(f"unknown kind {kind!r}; use mlp or conv")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)
        return h.chunk(2, dim=1) if self.variational else (h, None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor):
        mean, logvar = self.encode(x)
        z = mean if logvar is None else mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decode(z), mean, logvar
