"""Activations sent from stage to stage outside a schedule (evaluation): a small header with
the dtype and shape first, since the receiver cannot know them (evaluation batches vary)."""

import torch
import torch.distributed as dist

from dtrain.config.errors import ConfigError

_HEADER = 10  # dtype, number of dimensions, up to 8 sizes
_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


def send(tensor: torch.Tensor, dst: int, group) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError("trainer", f"trainer=pipeline passes tensors between stages; a layer returned {type(tensor).__name__}")
    dist.send(_header(tensor), dst=dst, group=group)
    dist.send(tensor.contiguous(), dst=dst, group=group)


def receive(src: int, group, device: torch.device) -> torch.Tensor:
    header = torch.empty(_HEADER, dtype=torch.int64, device=device)
    dist.recv(header, src=src, group=group)
    tensor = _empty_like(header, device)
    dist.recv(tensor, src=src, group=group)
    return tensor


def broadcast_from(tensor: torch.Tensor | None, src: int, group, device: torch.device) -> torch.Tensor:
    """`tensor` of rank `src` on every rank of `group` (the others pass None)."""
    header = _header(tensor) if tensor is not None else torch.empty(_HEADER, dtype=torch.int64, device=device)
    dist.broadcast(header, src=src, group=group)
    if tensor is None:
        tensor = _empty_like(header, device)
    dist.broadcast(tensor, src=src, group=group)
    return tensor


def _header(tensor: torch.Tensor) -> torch.Tensor:
    """dtype and shape of a tensor about to be sent, as one fixed-size tensor."""
    if tensor.dim() > _HEADER - 2:
        raise ConfigError("trainer", f"trainer=pipeline passes tensors of at most {_HEADER - 2} dimensions between stages, not {tensor.dim()}")
    values = [_DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape]
    return torch.tensor(values + [0] * (_HEADER - len(values)), dtype=torch.int64, device=tensor.device)


def _empty_like(header: torch.Tensor, device: torch.device) -> torch.Tensor:
    dtype, ndim, *shape = header.tolist()
    return torch.empty(shape[:ndim], dtype=_DTYPES[dtype], device=device)
