"""Throughput and MFU: samples/s, tokens/s, step time, the share of it spent waiting for data,
achieved TFLOP/s and model FLOPs utilisation, per logging step and as a run summary.

Counts batches, not optimizer steps (a GAN steps two optimizers per batch). Timing is host
time between logging steps; only logging steps synchronise with the device, so no other
step pays for the measurement. The data wait is the time Lightning's fetches of training
batches took, as dtrain's default profiler (dtrain.perf.fetch_timer) keeps it; under another
profiler, the whole gap between one batch's end and the next one's start (which holds
Lightning's own work between batches too). The FLOPs of one training batch are counted once,
on a meta copy of the module made before the strategy wraps or shards it (dtrain.perf.flops).
"""

import statistics
import time
import warnings

import torch

from dtrain.perf.fetch_timer import FetchTimer
from dtrain.perf.part import RecordPart

HISTORY_LIMIT = 10_000  # logged values kept per figure (they travel in every checkpoint)
# Figures whose median over the run goes to the summary.
SUMMARISED = (
    "train/samples_per_sec", "train/samples_per_sec_per_replica", "train/tokens_per_sec", "train/tokens_per_sec_per_replica",
    "train/masked_tokens_per_sec", "train/step_time_s", "train/data_wait_frac", "train/tflops", "train/mfu",
)


def batch_counts(pl_module, batch) -> dict:
    """What one training batch holds: {"samples": n} and, for sequence tasks, "tokens" (the
    task says: dtrain.tasks.base.Task.batch_counts)."""
    if hasattr(pl_module, "batch_counts"):
        return pl_module.batch_counts(batch)
    from lightning.pytorch.utilities.data import extract_batch_size

    return {"samples": extract_batch_size(batch)}


class Throughput(RecordPart):
    """`count_flops=false` skips the FLOP count (no MFU); `cache_dir` holds the CPU's measured peak."""

    def __init__(self, count_flops: bool = True, cache_dir: str | None = None):
        self.count_flops, self.cache_dir = count_flops, cache_dir
        self.history: dict[str, list[float]] = {}  # logged values, for the summary's medians
        self.totals: dict[str, float] = {}  # batches, samples, tokens over the run (resumes included)
        self.flops_per_batch: int | None = None  # one replica's training batch, forward and backward
        self._meta = None
        self._counts: dict = {}  # this window's counts (ints, or tensors left on the device)
        self._window_start = self._last_end = None
        self._batches = 0
        self._wait = 0.0
        self._skip_gap = True
        self._fetch_timer = None  # dtrain's profiler, when the trainer has it
        self._fetched = 0.0  # its fetch seconds already counted

    # -- set-up: sizes, peak, the module to count FLOPs on ------------------------------------
    def setup(self, trainer, pl_module) -> None:
        from dtrain.parallel.dims import dims_of
        from dtrain.perf.peak import peak_flops

        self.dp_size, self.world_size = dims_of(trainer).data_parallel, trainer.world_size
        self._fetch_timer = trainer.profiler if isinstance(trainer.profiler, FetchTimer) else None
        self.params = sum(p.numel() for p in pl_module.parameters())  # whole, before any sharding
        self.peak, self.peak_source = peak_flops(trainer, self.cache_dir)
        if self.count_flops:
            from dtrain.perf.flops import flops_copy

            try:
                self._meta = flops_copy(pl_module)
            except Exception as error:  # a module deepcopy cannot copy: no MFU, the run goes on
                warnings.warn(f"FLOPs not counted ({type(error).__name__}: {error}); no MFU for this run")

    def _count_flops(self, pl_module, batch) -> None:
        from dtrain.perf.flops import count_training_flops

        try:
            self.flops_per_batch, self.flops_counted_on = count_training_flops(
                pl_module, batch, cycle=getattr(pl_module, "batch_cycle", 1), meta_copy=self._meta
            )
        except Exception as error:
            warnings.warn(f"FLOPs not counted ({type(error).__name__}: {error}); no MFU for this run")
        self._meta = None

    # -- timing ----------------------------------------------------------------------------
    def train_epoch_start(self, trainer, pl_module) -> None:
        self._skip_gap = True  # epoch boundaries (loader restart, epoch-end hooks) are not data wait

    def validation_start(self, trainer, pl_module) -> None:
        self._skip_gap = True  # nor is validation, or the checkpoint written after it

    def batch_start(self, trainer, pl_module, batch) -> None:
        if self._meta is not None:
            self._count_flops(pl_module, batch)
        now = time.perf_counter()
        fetched = self._fetch_timer.fetch_seconds if self._fetch_timer is not None else None
        if self._last_end is not None:
            gap = now - self._last_end
            if self._skip_gap:
                if self._window_start is not None:
                    self._window_start += gap
            else:
                self._wait += gap if fetched is None else fetched - self._fetched
        if fetched is not None:
            self._fetched = fetched  # a fetch in a skipped gap (an epoch's first) is not counted either
        self._skip_gap = False

    def batch_end(self, trainer, pl_module, batch, logging: bool, figures: dict) -> None:
        for key, value in batch_counts(pl_module, batch).items():
            self._counts[key] = self._counts.get(key, 0) + value
        self._batches += 1
        if logging and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the window's time must include its device work
        now = time.perf_counter()
        if logging or self._window_start is None:
            if self._window_start is not None:
                figures.update(self._window_figures(now - self._window_start))
            else:
                self._add_totals()  # the first batch (FLOP count, warm-up) is not timed
            self._window_start, self._counts, self._batches, self._wait = now, {}, 0, 0.0
        self._last_end = now

    def _add_totals(self) -> dict:
        counts = {key: float(value) for key, value in self._counts.items()}  # a sync, on logging steps only
        counts["batches"] = self._batches
        for key, value in counts.items():
            self.totals[key] = self.totals.get(key, 0) + value
        return counts

    def _window_figures(self, seconds: float) -> dict:
        counts = self._add_totals()
        if seconds <= 0 or not self._batches:
            return {}
        dp = self.dp_size
        values = {"train/step_time_s": seconds / self._batches, "train/data_wait_frac": self._wait / seconds}
        for key, name in (("samples", "samples"), ("tokens", "tokens"), ("masked_tokens", "masked_tokens")):
            if key in counts:
                values[f"train/{name}_per_sec"] = counts[key] * dp / seconds
                if dp > 1:
                    values[f"train/{name}_per_sec_per_replica"] = counts[key] / seconds
        if self.flops_per_batch:
            achieved = self.flops_per_batch * self._batches * dp / seconds  # every replica's FLOPs
            values["train/tflops"] = achieved / 1e12
            if self.peak:
                values["train/mfu"] = achieved / (self.peak * self.world_size)  # unclamped: >1 means a wrong count or peak
        for key, value in values.items():
            kept = self.history.setdefault(key, [])
            kept.append(value)
            if len(kept) > HISTORY_LIMIT:  # every other value: an even spread over the run, for the medians
                del kept[::2]
        return values

    # -- summary and resume ----------------------------------------------------------------
    def summary(self, trainer, pl_module) -> dict:
        summary = {key: statistics.median(values) for key, values in self.history.items() if key in SUMMARISED and values}
        summary.update({f"train/{key}": value for key, value in self.totals.items()})
        summary.update(params=self.params, peak_flops=self.peak, peak_flops_source=self.peak_source, data_parallel_size=self.dp_size, world_size=self.world_size)
        if self.flops_per_batch:
            samples = self.totals.get("samples", 0) / max(self.totals.get("batches", 1), 1)
            summary.update(
                flops_per_step=self.flops_per_batch * self.dp_size,
                flops_per_sample=self.flops_per_batch / samples if samples else None,
                flops_counted_on=self.flops_counted_on,
            )
        return summary

    def state_dict(self) -> dict:
        return {"history": self.history, "totals": self.totals}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.totals = state.get("history", {}), state.get("totals", {})
