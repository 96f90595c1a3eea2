"""The two roofs MFU is read against: the device's dense bf16 peak from the datasheet (the table
dtrain's own MFU uses) and the rate of one large bf16 matrix product measured here."""

import statistics
import time

import torch


def dense_peak(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, where it came from): 989.4e12 for an H100 SXM or an H200, as
    NVIDIA's datasheets and torchtitan give it; None on a CPU (no datasheet peak)."""
    if device.type != "cuda":
        return None, "none: a CPU has no datasheet peak here"
    from dtrain.perf.peak import gpu_peak_flops

    return gpu_peak_flops(device, torch.bfloat16)


def matmul_rate(device: torch.device, size: int, warmup: int = 5, repeats: int = 20) -> dict:
    """FLOP/s of a size^3 bf16 matrix product on random data (zeros run faster than real data),
    timed one product at a time with CUDA events (host clock on a CPU): median and best."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    out = torch.empty(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b, out=out)
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1e3)
        else:
            began = time.perf_counter()
            torch.mm(a, b, out=out)
            seconds.append(time.perf_counter() - began)
    if not torch.isfinite(out).all():
        raise RuntimeError("the matrix product gave non-finite values")
    flops = 2 * size**3
    return {"size": size, "repeats": repeats, "median_flops": flops / statistics.median(seconds), "best_flops": flops / min(seconds)}
