"""The time the training loop waits for its next batch, measured where Lightning itself marks
it: its data fetcher brackets every fetch of a training batch with
`trainer.profiler.start/stop("[_TrainingEpochLoop].train_dataloader_next")`.

`FetchTimer` is dtrain's default `trainer.profiler`: Lightning's pass-through profiler that keeps
the seconds of those fetches (the throughput records' `train/data_wait_frac` reads them) and
nothing else. It is also cheaper than Lightning's default: Lightning wraps every hook it calls in
`profiler.profile(...)`, a generator-based context manager (about 1 us a call here, a hundred and
more calls a step); here that is one shared no-op context. `trainer.profiler=simple` (or any
other profiler) still works; the data wait is then measured as the gap between batches.
"""

import time
from contextlib import nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

TRAIN_FETCH = "].train_dataloader_next"  # the action's name ends so: "[<loop class>].train_dataloader_next"
_NOTHING = nullcontext()


class FetchTimer(PassThroughProfiler):
    def __init__(self) -> None:
        super().__init__()
        self.fetch_seconds = 0.0  # every training batch's fetch so far, in this process
        self._fetch_start: float | None = None

    def start(self, action_name: str) -> None:
        if action_name.endswith(TRAIN_FETCH):
            self._fetch_start = time.perf_counter()

    def stop(self, action_name: str) -> None:
        if self._fetch_start is not None and action_name.endswith(TRAIN_FETCH):
            self.fetch_seconds += time.perf_counter() - self._fetch_start
            self._fetch_start = None

    def profile(self, action_name: str):
        """Lightning's hook calls: nothing to record (the fetches come through start/stop)."""
        return _NOTHING
