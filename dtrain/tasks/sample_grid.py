"""Sample grids: generated images saved as PNG under <run>/samples/ and logged to W&B when it is on."""

from pathlib import Path

import torch


def save_grid(trainer, images: torch.Tensor, name: str, nrow: int = 8) -> Path | None:
    """Write `images` (in [-1, 1]) as `<run>/samples/<name>.png` on rank zero and log it to every
    W&B logger of `trainer`; returns the path (None on other ranks)."""
    from torchvision.utils import save_image

    if not trainer.is_global_zero:
        return None
    path = Path(trainer.default_root_dir) / "samples" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1), padding=1)
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"samples/{name.split('-')[0]}", images=[str(path)], caption=[name], step=trainer.global_step)
    return path
