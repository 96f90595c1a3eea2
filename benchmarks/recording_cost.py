"""What recording costs per training step: dtrain's recording callbacks switched on and off in
alternating blocks of steps within one run, so a shared machine's drifts hit both alike. Prints
one JSON object per model.

    python benchmarks/recording_cost.py [--models cnn mlp] [--steps 1000] [--repeats 5] [--block 20] [--threads 1] [-- overrides]

"On" is the default run; "off" leaves out dtrain's Records callback (throughput/MFU, memory,
optimizer figures, convergence: what `~callbacks.records` would). Metrics go to CSV, with Lightning's default logging interval
(every 10 steps; a block of 20 holds two logging steps), validation and checkpoints every epoch
as usual. A step is the interval between consecutive training-batch ends; the first of each
block (it carries the other mode's logger flush), epoch boundaries and validation are dropped,
and the rest compared by their mean (the slowest 2% cut; the mean keeps the logging steps'
share) and median (a step without logging), in CPU time of this process (what the recording adds
is work in this process, and CPU time is what other processes on a shared machine disturb
least) and in wall time. The run is repeated (`--repeats`) and each figure is the median over
the repeats (one run alone moved by +-5% on a 5 ms step here), with every repeat's overhead
listed beside it. The one-off costs (the FLOP count on the meta device, measuring the
CPU peak before it is cached) are reported apart.
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
TIMES: dict[bool, dict[str, list[float]]] = {}
HOOK_SECONDS: list[float] = []  # per timed "on" step: seconds inside Records' hooks
_INSIDE = [0.0]  # seconds inside Records' hooks since the last step ended
DISPATCH_SECONDS: list[float] = []
STEP_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
              "on_before_zero_grad", "on_train_batch_end")  # what Lightning calls on every callback each step
TIMED_HOOKS = ("on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end")  # what Records does work in


class Interleave(Callback):
    """Runs first among the callbacks; every `block` batches switches the Records callback in or
    out of the trainer's list and times each step into TIMES[recording]."""

    def __init__(self, block: int):
        self.block, self.batches, self.recording, self.last = block, 0, True, None
        self.recorders: list[Callback] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        from dtrain.callbacks.records import Records

        self.recorders = [c for c in trainer.callbacks if isinstance(c, Records)]
        trainer.callbacks[:] = [self, *(c for c in trainer.callbacks if c is not self)]
        for recorder in self.recorders:
            for hook in TIMED_HOOKS:
                setattr(recorder, hook, timed(getattr(recorder, hook)))
        DISPATCH_SECONDS.append(dispatch_seconds(trainer))


    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.batches % self.block == 0:
            self.recording = not self.recording
            others = [c for c in trainer.callbacks if c not in self.recorders]
            trainer.callbacks[:] = others + self.recorders if self.recording else others
            self.last = None  # the first step of a block carries the other mode's logger flush

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.process_time(), time.perf_counter()
        if self.last is not None:
            times = TIMES.setdefault(self.recording, {"cpu": [], "wall": []})
            times["cpu"].append(now[0] - self.last[0])
            times["wall"].append(now[1] - self.last[1])
            if self.recording:
                HOOK_SECONDS.append(_INSIDE[0])
        _INSIDE[0] = 0.0
        self.last = now
        self.batches += 1


def timed(hook):
    def call(*args, **kwargs):
        start = time.perf_counter()
        hook(*args, **kwargs)
        _INSIDE[0] += time.perf_counter() - start

    return call


def dispatch_seconds(trainer, calls: int = 20_000) -> float:
    """What Lightning spends to call one hook of one more callback that does nothing (its
    profiler context, the lookup): a hook called with one no-op callback in the list against
    the same call with none, so the part of the call every hook pays anyway is not counted."""
    from lightning.pytorch.trainer import call

    def per_call(callbacks: list) -> float:
        trainer.callbacks[:] = callbacks
        start = time.perf_counter()
        for _ in range(calls):
            call._call_callback_hooks(trainer, "on_before_zero_grad", None)
        return (time.perf_counter() - start) / calls

    callbacks = trainer.callbacks[:]
    try:
        per_call([Callback()])  # warm-up
        return max(0.0, statistics.median(per_call([Callback()]) - per_call([]) for _ in range(5)))
    finally:
        trainer.callbacks[:] = callbacks


def interleaved(model: str, steps: int, block: int, overrides: list[str]) -> dict:
    from dtrain.config.compose import compose
    from dtrain.train import run

    TIMES.clear()
    HOOK_SECONDS.clear()
    args = [f"model={model}", f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "test=false", "logger=[csv]",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "+callbacks.interleave._target_=__main__.Interleave", f"+callbacks.interleave.block={block}", *overrides]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # stdout: JSON only
        cfg = compose(args, run_dir=Path(tmp) / "run")
        run(cfg)
    result = {"steps_timed_on": len(TIMES[True]["cpu"]), "steps_timed_off": len(TIMES[False]["cpu"])}
    # Direct: the time inside Records' hooks plus Lightning's dispatch of its six step hooks to
    # one more callback, per step it was on, against the step without it (not disturbed by the
    # machine's drifts).
    inside = trimmed_mean(HOOK_SECONDS)
    dispatch = len(STEP_HOOKS) * DISPATCH_SECONDS[-1]
    off = trimmed_mean(TIMES[False]["wall"])
    result.update(records_hooks_us_per_step=round(inside * 1e6, 2), dispatch_us_per_step=round(dispatch * 1e6, 2),
                  direct_overhead_pct=round(100 * (inside + dispatch) / off, 2))
    for clock in ("cpu", "wall"):
        for name, average in (("mean", trimmed_mean), ("median", statistics.median)):
            on, off = (average(TIMES[mode][clock]) * 1e3 for mode in (True, False))
            result.update({f"step_{clock}_{name}_ms_on": round(on, 4), f"step_{clock}_{name}_ms_off": round(off, 4),
                           f"{clock}_{name}_overhead_pct": round(100 * (on / off - 1), 2)})
    return result


def trimmed_mean(values: list[float], cut: float = 0.02) -> float:
    """The mean without the slowest 2% (a descheduled process, a page fault): it keeps the
    logging steps, one in ten, which a median would hide."""
    kept = sorted(values)[: max(1, int(len(values) * (1 - cut)))]
    return sum(kept) / len(kept)


def one_off_costs(model: str, overrides: list[str]) -> dict:
    """Seconds to count one training batch's FLOPs on the meta device, and to measure the CPU peak."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import open_dict
    from torch.utils.data import DataLoader

    from dtrain.config.compose import compose
    from dtrain.perf.flops import count_training_flops
    from dtrain.perf.peak import measure_cpu_peak

    cfg = compose([f"model={model}", *overrides], run_dir="/tmp/unused")
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        cfg.shapes = datamodule.shapes
    task = instantiate(cfg.model)
    datamodule.setup("fit")
    batch = next(iter(DataLoader(datamodule.train_set, batch_size=cfg.data.batch_size, collate_fn=getattr(datamodule, "collate_fn", None))))
    task.log_train = lambda *args, **kwargs: None  # no trainer here to ask whether to log
    start = time.perf_counter()
    count_training_flops(task, batch)
    counted = time.perf_counter() - start
    start = time.perf_counter()
    measure_cpu_peak(torch.float32)
    return {"flops_count_s": round(counted, 4), "cpu_peak_measure_s": round(time.perf_counter() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(args.threads)
    for model in args.models:
        interleaved(model, 2 * args.block + 1, args.block, overrides)  # warm-up: imports, data caches, the CPU peak cached
        result = {"model": model, "steps": args.steps, "repeats": args.repeats, "block": args.block, "threads": args.threads}
        runs = [interleaved(model, args.steps, args.block, overrides) for _ in range(args.repeats)]
        for key in runs[0]:
            result[key] = statistics.median(run[key] for run in runs)
            if key.endswith("_pct"):
                result[f"{key}_each"] = [run[key] for run in runs]
        print(json.dumps({**result, **one_off_costs(model, overrides)}), flush=True)


if __name__ == "__main__":
    main()
