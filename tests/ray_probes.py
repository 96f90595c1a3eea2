"""Test instruments for sweeps, plugged into trials like user callbacks (`+callbacks.x._target_=...`)."""

import hashlib
import json
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


def weights_fingerprint(state: dict) -> str:
    digest = hashlib.sha1()
    for name in sorted(state):
        if name.startswith("net."):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Attempts(Callback):
    """Appends to <run>/attempts.jsonl, at each start of fitting: the step it starts from, the
    optimizer's hyperparameters it trains with and a fingerprint of the weights it starts from."""

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        group = trainer.optimizers[0].param_groups[0]
        record = {
            "step": trainer.global_step,
            "lr": group["lr"],
            "weight_decay": group.get("weight_decay"),
            "weights": weights_fingerprint(pl_module.state_dict()),
        }
        with open(Path(trainer.default_root_dir) / "attempts.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


class CrashOnce(Callback):
    """Raises at `step` in the first trial of the sweep that gets there (a marker file made with
    O_EXCL in `marker_dir` says it happened), so exactly one trial crashes, once."""

    def __init__(self, marker_dir: str, step: int = 5):
        self.marker = Path(marker_dir) / "crashed"
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, trainer.default_root_dir.encode())
        os.close(fd)
        raise RuntimeError(f"test crash at step {self.step}")


def load_weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


class SlowEpochs(Callback):
    """Sleeps after each epoch so that a test can act while a trial is mid-run."""

    def __init__(self, seconds: float = 1.0):
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import time

        time.sleep(self.seconds)


class StartTogether(Callback):
    """Holds each trial at the start of its first fit until `count` trials have got there (a
    marker file each in `marker_dir`), so that trials on different nodes train side by side
    however late Ray started one of them. A trial restarted later (an exploit, a retry) passes."""

    def __init__(self, marker_dir: str, count: int = 2, timeout_s: float = 120.0):
        self.folder = Path(marker_dir)
        self.count = count
        self.timeout_s = timeout_s

    def on_train_start(self, trainer, pl_module) -> None:
        import time

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / Path(trainer.default_root_dir).name).touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.folder.iterdir())) < self.count and time.monotonic() < deadline:
            time.sleep(0.1)


class RunClock(Callback):
    """Writes <run>/run_clock.json: wall seconds from the start of fit to the end of test (the
    trial's own training and evaluation), for benchmarks/sweep_overhead.py."""

    def on_fit_start(self, trainer, pl_module) -> None:
        import time

        self.start, self.started_at = time.perf_counter(), time.time()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        import time

        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / "run_clock.json").write_text(json.dumps({"seconds": time.perf_counter() - self.start, "started_at": self.started_at}))
