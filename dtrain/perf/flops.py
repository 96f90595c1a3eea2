"""FLOPs of one training step, counted on a meta-device copy of the LightningModule.

The task's own `training_step` runs on the copy, so every family counts what it really does (a
GAN's critic and generator passes, a diffusion model's noise prediction, a masked LM's head on
the masked positions), with logging and optimizer steps turned into no-ops and the loss
backpropagated. The meta device does no arithmetic: counting a large net takes milliseconds
and no memory, and attention is counted there (on real CPU tensors PyTorch's fused attention
kernel is not counted at all).
"""

import copy
import functools
import warnings

import torch
from torch import nn


class _NoOpOptimizer:
    """What the copy's `self.optimizers()` returns: the training step may step and zero it."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.param_groups = getattr(optimizer, "param_groups", [])

    def step(self, closure=None, **kwargs):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True):
        pass


def module_on(device: torch.device | str, module: nn.Module, keep: tuple = ()) -> nn.Module:
    """A copy of `module` whose parameters and buffers are new, uninitialised tensors on `device`
    (on meta: no memory at all); the objects in `keep` (the trainer) are shared, not copied."""
    memo = {id(obj): obj for obj in keep}
    for tensor in [*module.parameters(), *module.buffers()]:
        empty = torch.empty_like(tensor, device=device)
        memo[id(tensor)] = nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    clone = copy.deepcopy(module, memo)
    for sub in clone.modules():
        # torch.compile'd and activation-checkpointed forwards point back at the original
        # module; the copy runs the plain forward (model FLOPs, without recomputation).
        if getattr(sub, "_compiled_call_impl", None) is not None:
            sub._compiled_call_impl = None
        sub.__dict__.pop("forward", None)
    return clone


def flops_copy(pl_module, device: str = "meta") -> nn.Module:
    """A copy of the LightningModule to count on: same trainer, logging and optimizer steps
    turned off. Make it before the strategy wraps or shards the module (a callback's `setup`)."""
    trainer = getattr(pl_module, "_trainer", None)
    clone = module_on(device, pl_module, keep=(trainer,) if trainer is not None else ())
    clone._device = torch.device(device)
    if trainer is not None:
        clone._trainer = trainer  # a LightningModule drops its trainer when copied

    def optimizers(use_pl_optimizer: bool = True):
        wrapped = [_NoOpOptimizer(o) for o in (trainer.optimizers if trainer is not None else [])]
        return wrapped[0] if len(wrapped) == 1 else wrapped

    clone.optimizers = optimizers
    clone.log = clone.log_dict = lambda *args, **kwargs: None
    clone.lr_schedulers = lambda: None
    clone.manual_backward = lambda loss, *args, **kwargs: loss.backward(*args, **kwargs)
    clone.toggle_optimizer = clone.untoggle_optimizer = clone.clip_gradients = lambda *args, **kwargs: None
    return clone


def _to(batch, device, dtype: torch.dtype | None):
    """The batch on `device`, floating tensors in `dtype`; the run's own batch stays as it is
    (a torch_geometric batch moves in place: it is copied first)."""
    from lightning.fabric.utilities.apply_func import _TransferableDataType, apply_to_collection

    def tensor_to(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)

    batch = apply_to_collection(batch, torch.Tensor, tensor_to)
    return apply_to_collection(batch, _TransferableDataType, lambda data: copy.copy(data).to(device))


def _step(module, batch, batch_idx: int) -> None:
    output = module.training_step(batch, batch_idx)
    if module.automatic_optimization and output is not None:
        loss = output["loss"] if isinstance(output, dict) else output
        loss.backward()


class _NoModuleTracking:
    """Stands in for FlopCounterMode's per-module tracker: every FLOP is the step's ("Global")."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass


def measure_flops(fn) -> int:
    """FLOPs of `fn()`, forward and backward, as PyTorch's FlopCounterMode counts them.

    Lightning's `measure_flops` is this plus a per-module breakdown whose backward hooks fail
    under `torch.autograd.grad` (a WGAN-GP critic's gradient penalty); the total is the same.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        fn()
    return counter.get_total_flops()


def _count(module, batch, cycle: int) -> int:
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    batch = _to(batch, module.device, dtype)
    return sum(measure_flops(functools.partial(_step, module, batch, i)) for i in range(cycle)) // cycle


def count_training_flops(pl_module, batch, cycle: int = 1, meta_copy: nn.Module | None = None) -> tuple[int, str]:
    """(FLOPs of one training batch, forward and backward, where they were counted).

    Averaged over `cycle` consecutive batch indices (a GAN updates its generator once every
    `critic_steps` batches). `meta_copy` is a `flops_copy` made earlier, before the strategy set
    the module up. A net with data-dependent shapes (boolean masks, graph ops) cannot run on
    the meta device; it is counted on an uninitialised CPU copy instead, with PyTorch's math
    attention, which the counter sees."""
    meta_copy = meta_copy if meta_copy is not None else flops_copy(pl_module)
    with torch.random.fork_rng(devices=[]):  # counting must not move the run's random stream
        try:
            return _count(meta_copy, batch, cycle), "meta"
        except (NotImplementedError, RuntimeError, TypeError, ValueError, IndexError):
            pass
        from torch.nn.attention import SDPBackend, sdpa_kernel

        cpu_copy = flops_copy(meta_copy, "cpu")
        for tensor in [*cpu_copy.parameters(), *cpu_copy.buffers()]:
            if tensor.is_floating_point():
                tensor.data.normal_(0, 0.02)  # finite values: some steps check them
        with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _count(cpu_copy, batch, cycle), "cpu"
