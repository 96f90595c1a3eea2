"""The learning rate and the gradient norm (before clipping), on logging steps only."""

import torch

from dtrain.perf.part import RecordPart


def gradient_norm(parameters) -> torch.Tensor | None:
    """The 2-norm of the gradients this process holds (the whole norm unless a strategy shards
    gradients outside DTensors: DeepSpeed ZeRO keeps them to itself, a pipeline stage has its own)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    plain = [g for g in grads if not hasattr(g, "full_tensor")]
    if len(plain) == len(grads):  # no DTensor: torch's own fused norm is the whole answer
        return torch.nn.utils.get_total_norm(plain, norm_type=2.0)
    squares = [torch.nn.utils.get_total_norm(plain, norm_type=2.0) ** 2] if plain else []
    # DTensor gradients (FSDP2, tensor parallel) live on different meshes: one norm each, made
    # whole by a collective (every rank runs this on the same steps).
    squares += [g.norm().full_tensor().to(squares[0].device if squares else g.device.type) ** 2 for g in grads if hasattr(g, "full_tensor")]
    return torch.stack([s.float() for s in squares]).sum().sqrt()


class OptimizerStats(RecordPart):
    """`train/lr` and `train/grad_norm` of the first optimizer, `train/lr_<i>` and
    `train/grad_norm_<i>` of any other (a GAN's generator)."""

    def before_optimizer_step(self, trainer, optimizer, figures: dict) -> None:
        index = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), 0)
        suffix = f"_{index}" if index else ""
        values = {f"train/lr{suffix}": float(optimizer.param_groups[0]["lr"])}
        norm = gradient_norm(p for group in optimizer.param_groups for p in group["params"])
        if norm is not None:
            values[f"train/grad_norm{suffix}"] = norm.detach().float()
        figures.update(values)
