"""Finding the checkpoint a resume starts from: the newest one that loads."""

from pathlib import Path

import torch


def _progress(path: Path) -> tuple[int, float] | None:
    """(global step, mtime) of a loadable Lightning checkpoint, None for a broken one."""
    try:
        if path.is_dir():  # sharded (FSDP, DeepSpeed) checkpoints are folders
            if not any((path / marker).exists() for marker in ("latest", ".metadata", "meta.pt")):
                return None
            return (-1, path.stat().st_mtime)
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        if "state_dict" not in checkpoint or "loops" not in checkpoint:
            return None
        return (int(checkpoint.get("global_step", -1)), path.stat().st_mtime)
    except Exception:  # a file cut short by a kill, or not a checkpoint at all
        return None


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    return [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint furthest into training (ties: the newest file), skipping broken ones."""
    scored = [(score, path) for path in checkpoint_candidates(run_dir) if (score := _progress(path)) is not None]
    return max(scored)[1] if scored else None
