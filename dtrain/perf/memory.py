"""Peak memory: allocated and reserved per GPU (the largest over ranks), peak RSS on the CPU."""

import sys

import torch

from dtrain.perf.part import RecordPart

GIB = 2**30


def peak_memory(device: torch.device) -> dict[str, float]:
    """This process's peak on `device`, GiB: CUDA's allocator peaks (host-side counters, no
    synchronisation), or the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return {"memory/peak_gib": torch.cuda.max_memory_allocated(device) / GIB, "memory/peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB}
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:  # Windows: no getrusage; psutil knows the peak working set there
        import psutil

        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", info.rss)
    return {"memory/peak_gib": peak / GIB}


class PeakMemory(RecordPart):
    """Logged on logging steps as the largest over ranks; the summary has the run's peak.

    On the CPU the figure is the process's peak RSS since it started (it includes whatever the
    process did before this run, e.g. earlier runs in one Python session)."""

    def train_start(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def _peaks(self, trainer) -> dict[str, float | torch.Tensor]:
        device = trainer.strategy.root_device
        peaks = peak_memory(device)
        if trainer.world_size > 1:  # the largest over ranks: a collective of device tensors
            peaks = {key: trainer.strategy.reduce(torch.tensor(value, device=device), reduce_op="max") for key, value in peaks.items()}
        return peaks

    def batch_end(self, trainer, pl_module, batch, logging: bool, figures: dict) -> None:
        if logging:
            figures.update(self._peaks(trainer))

    def summary(self, trainer, pl_module) -> dict:
        summary = {key: float(value) for key, value in self._peaks(trainer).items()}
        summary["memory/kind"] = "cuda allocated (reserved)" if trainer.strategy.root_device.type == "cuda" else "cpu peak rss"
        return summary
