"""The hand-written side: the same dtrain net, data and optimizer trained by a plain PyTorch loop
(no Lightning), bf16 autocast, timed in windows the way dtrain's throughput figures are."""

import math
import re
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.gpu.sizes import DecoderCase, ResNetCase

GIB = 2**30
ATTENTION_KERNELS = r"flash|fmha|efficient_attention|cudnn_attention|sdpa|scaled_dot_product"


def adamw(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as dtrain's tasks build it: no decay for biases and normalisation weights."""
    params = list(net.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% (dtrain's default schedule)."""
    warmup = max(1, int(total_steps * 0.05))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        persistent_workers=num_workers > 0, pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0),
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> dict:
    """CUDA's allocator peaks since the last reset, or this process's peak RSS on a CPU (as dtrain's records)."""
    if device.type == "cuda":
        return {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / GIB, "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
                "memory_kind": "cuda allocated (reserved)"}
    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, "memory_kind": "cpu peak rss"}


def profiled(step, device: torch.device, pattern: str) -> list[str]:
    """Run `step` once under PyTorch's profiler; the names of the operators and kernels it ran
    that match `pattern` (which attention kernel SDPA picked, say)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    stepped = False
    try:
        with profile(activities=activities) as profiler:
            step()
            stepped = True
            synchronize(device)
        names = {event.key for event in profiler.key_averages() if re.search(pattern, event.key, re.IGNORECASE)}
    except RuntimeError as error:  # a machine whose profiler cannot start: the step still counts
        names = {f"profiler failed: {error}"}
        if not stepped:
            step()
    return sorted(name[:120] for name in names)[:10]


def train(net, batches: DataLoader, loss_of, case, device: torch.device, inspect: str | None = None) -> dict:
    """`case.steps` optimizer steps; the first `case.warmup` (compilation, cuDNN's search, worker
    start) untimed, the rest timed in windows of `case.window` steps, each ending in a device
    synchronisation, data loading included. Returns the median window's step time and what
    shows the steps were real (losses, whether the weights moved). With `inspect`, the last
    warm-up step runs under the profiler and the kernels matching it are listed."""
    optimizer = adamw(net, case.lr, case.weight_decay)
    scheduler = warmup_cosine(optimizer, case.steps)
    probe = next(p for p in net.parameters() if p.dim() >= 2)
    before = probe.detach().clone()
    batch_iter = iter(batches)

    def step() -> torch.Tensor:
        inputs, targets = (t.to(device, non_blocking=True) for t in next(batch_iter))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_of(net(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    first_loss = step().item()
    kernels = None
    for number in range(2, case.warmup + 1):
        if inspect and number == case.warmup:
            kernels = profiled(step, device, inspect)
        else:
            step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - began
    windows = []
    for _ in range((case.steps - case.warmup) // case.window):
        start = time.perf_counter()
        for _ in range(case.window):
            loss = step()
        synchronize(device)
        windows.append(time.perf_counter() - start)
    steps = case.warmup + len(windows) * case.window
    return {
        "steps": steps,
        "timed_windows": len(windows),
        "step_time_s": statistics.median(windows) / case.window,
        "window_spread": (max(windows) - min(windows)) / statistics.median(windows),
        "warmup_seconds": warmup_seconds,
        "first_loss": first_loss,
        "last_loss": loss.item(),
        "weights_changed": not torch.equal(before, probe.detach()),
        **peak_memory_gib(device),
        **({"profiled_kernels": kernels} if inspect else {}),
    }


def decoder_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # dtrain.tasks.language_model's


def build_decoder(case: DecoderCase, device: torch.device | str = "cpu"):
    from dtrain.nets.transformer import Transformer

    return Transformer(
        case.vocab_size, case.block_size, d_model=case.d_model, n_layers=case.n_layers, n_heads=case.n_heads,
        dropout=0.0, causal=True, tie_embeddings=True,
    ).to(device)


def decoder_loop(case: DecoderCase, device: torch.device, compile: bool) -> dict:
    from dtrain.data.generated import RandomTokens

    torch.manual_seed(0)
    net = build_decoder(case, device)
    if compile:
        net.compile()  # as dtrain's runtime.compile=true does: the net, in place
    data = RandomTokens(case.steps * case.batch_size, case.block_size, case.vocab_size, torch.Generator().manual_seed(0))
    # Which attention SDPA ran (flash, memory-efficient, cuDNN or the plain math path), by name.
    result = train(net, loader(data, case.batch_size, case.num_workers, device), decoder_loss, case, device, inspect=ATTENTION_KERNELS)
    result["tokens_per_sec"] = case.batch_size * case.block_size / result["step_time_s"]
    return result


def resnet_loop(case: ResNetCase, device: torch.device, compile: bool) -> dict:
    from benchmarks.gpu.channels_last import ChannelsLastVisionNet
    from dtrain.data.generated import RandomImages

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as trainer.benchmark=true on dtrain's side
    net = ChannelsLastVisionNet("resnet", in_channels=3, num_classes=case.num_classes, image_size=case.image_size, arch=case.arch).to(device)
    if compile:
        net.compile()
    data = RandomImages(case.steps * case.batch_size, case.distinct, 3, case.image_size, case.num_classes, torch.Generator().manual_seed(0))
    result = train(net, loader(data, case.batch_size, case.num_workers, device), F.cross_entropy, case, device)
    result["images_per_sec"] = case.batch_size / result["step_time_s"]
    return result


def flash_attention_runs(case: DecoderCase, device: torch.device) -> dict:
    """Whether PyTorch's flash-attention kernel takes the decoder's attention (bf16, causal, its
    head size) forward and backward, forced with sdpa_kernel: an error there means SDPA would
    fall back to a slower kernel."""
    if device.type != "cuda":
        return {"flash_attention": None, "why": "CUDA only"}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shape = (2, case.n_heads, case.block_size, case.d_model // case.n_heads)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        synchronize(device)
    except Exception as error:  # RuntimeError "No available kernel", or anything else this torch raises
        return {"flash_attention": False, "why": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
    return {"flash_attention": True}
