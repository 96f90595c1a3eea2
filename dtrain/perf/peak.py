"""The peak FLOP/s of one device at the run's precision: a GPU's dense peak from a table, a CPU's
measured once per machine with a short matmul and cached."""

import json
import os
import platform
import time
from pathlib import Path

import torch

# Dense (not 2:4-sparse) tensor-core peaks, TFLOP/s, for the chips whose entries in Lightning's
# table (lightning.fabric.utilities.throughput, 2.6.x) are sparse peaks, twice too high, or
# whose names it does not parse ("NVIDIA H200" finds no entry there). Source: NVIDIA's H100/H200
# datasheets, the figures torchtitan uses (H100 SXM 989, H100 PCIe 756, H200 989 bf16).
_DENSE_TFLOPS = {
    "h200 nvl": {"tfloat32": 417.5, torch.bfloat16: 835.5, torch.float16: 835.5, torch.float32: 60.0, torch.float64: 30.0},
    "h200": {"tfloat32": 494.7, torch.bfloat16: 989.4, torch.float16: 989.4, torch.float32: 66.9, torch.float64: 33.5},
    "h100 nvl": {"tfloat32": 417.5, torch.bfloat16: 835.5, torch.float16: 835.5, torch.float32: 60.0, torch.float64: 30.0},
}
CPU_PEAK_FILE = "cpu_peak_flops.json"


def compute_dtype(trainer) -> torch.dtype:
    """The dtype the run's matmuls use (bf16 under bf16-mixed, ...), as Lightning reads it."""
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    return _plugin_to_compute_dtype(trainer.precision_plugin)


def dense_peak_correction(device_name: str, key) -> float | None:
    """dtrain's dense peak (FLOP/s) for a GPU whose entry in Lightning's table is wrong or
    missing, at `key` (a dtype or "tfloat32"); None to use Lightning's table."""
    chip = device_name.lower()
    for known, peaks in _DENSE_TFLOPS.items():
        if all(word in chip for word in known.split()):
            return peaks[key] * 1e12 if key in peaks else None
    return None


def gpu_peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(dense peak FLOP/s, where it came from) for a CUDA device; None where no table knows it."""
    from lightning.fabric.utilities.throughput import get_available_flops

    name = torch.cuda.get_device_name(device)
    key = dtype
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest" and torch.cuda.get_device_capability(device) >= (8, 0):
        key = "tfloat32"  # as Lightning reads it: TF32 tensor cores do float32 matmuls then
    corrected = dense_peak_correction(name, key)
    if corrected:
        return corrected, f"dtrain dense table: {name}"
    flops = get_available_flops(device, dtype)
    return (float(flops), f"lightning table: {name}") if flops else (None, f"unknown GPU: {name}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_cpu_peak(dtype: torch.dtype, size: int = 512, seconds: float = 0.5) -> float:
    """The best FLOP/s of a square matmul at `dtype` on this process's threads: the roof a
    well-shaped training step can reach here (not the vendor's theoretical figure). Many short
    matmuls, the best kept: on a shared machine some run undisturbed (a 1024^3 one, at ~10 ms,
    spans several scheduler slices and reads 4x low under load)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up: thread pool, packing buffers
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def cpu_peak_flops(dtype: torch.dtype, cache_dir: str | os.PathLike | None) -> tuple[float, str]:
    """(measured peak FLOP/s, where it came from), cached per CPU model, thread count and dtype
    under `cache_dir`: measured once per machine, not once per run."""
    threads = torch.get_num_threads()
    key = f"{_cpu_name()}|{threads} threads|{str(dtype).removeprefix('torch.')}|torch {torch.__version__}"
    path = Path(cache_dir) / CPU_PEAK_FILE if cache_dir else None
    cache = {}
    if path is not None and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    source = f"measured cpu matmul {str(dtype).removeprefix('torch.')}, {threads} threads"
    if key in cache:
        return float(cache[key]), source
    peak = measure_cpu_peak(dtype)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**cache, key: peak}, indent=1))
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    return peak, source


def peak_flops(trainer, cache_dir=None) -> tuple[float | None, str]:
    """(peak FLOP/s of one of the run's devices at its precision, source)."""
    device, dtype = trainer.strategy.root_device, compute_dtype(trainer)
    if device.type == "cuda":
        return gpu_peak_flops(device, dtype)
    if device.type == "cpu":
        return cpu_peak_flops(dtype, cache_dir)
    from lightning.fabric.utilities.throughput import get_available_flops

    flops = get_available_flops(device, dtype)
    return (float(flops), f"lightning table: {device.type}") if flops else (None, f"unknown device: {device.type}")
