"""A small U-Net that predicts the noise in a noised image at a given diffusion step (for DDPM)."""

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the (integer) diffusion step, as in the transformer's positions."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int, groups: int = 8):
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(min(groups, cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.time = nn.Linear(time_dim, cout)
        self.block2 = nn.Sequential(nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.time(temb)[:, :, None, None]
        return self.block2(h) + self.skip(x)


class UNet(nn.Module):
    """Resolution levels of `channels` (each halving the image), one residual block per level down
    and up, skip connections between them; `forward(x_t, t)` returns the predicted noise."""

    def __init__(self, in_channels: int, image_size: int, channels: list[int] = (64, 128), time_dim: int = 128):
        super().__init__()
        if image_size % 2 ** (len(channels) - 1):
            raise ValueError(f"image_size {image_size} does not halve {len(channels) - 1} times")
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        c = channels[0]
        for cout in channels:
            self.down.append(ResBlock(c, cout, time_dim))
            c = cout
        self.mid = ResBlock(c, c, time_dim)
        for skip in reversed(channels):
            self.up.append(ResBlock(c + skip, skip, time_dim))
            c = skip
        self.pool, self.upsample = nn.AvgPool2d(2), nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = self.pool(h)
        h = self.mid(h, temb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if i < len(self.up) - 1:
                h = self.upsample(h)
        return self.out(h)
