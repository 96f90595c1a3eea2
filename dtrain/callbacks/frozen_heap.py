"""Python's cyclic garbage collector leaves the objects a run starts with alone while it trains.

By the first training step a run's process holds half a million objects that live as long as it
does: the modules of torch, Lightning, W&B and Hydra, the net, the trainer. Python's full
collection walks all of them each time it runs, and the objects a run makes while it sets up (its
loops, loggers, the sanity check's) can bring one on early in training. Measured on a 2-core CPU,
in the loop-overhead benchmark's MLP (5 ms a step) with a few timing callbacks added: one full
collection of 0.25-0.3 s inside the first epoch in each of three runs, 0.6 ms a step over its 420
steps (whether one lands inside training depends on what set-up left behind; the benchmark's own
run had none there). `gc.freeze()` at the start of training moves every object that exists into
a generation the collector does not walk, so later collections walk only what training makes.
torchtitan avoids the same pauses by switching the collector off and collecting every few steps;
freezing keeps Python's own schedule and needs no setting.

Frozen objects are still freed when nothing refers to them; only cycles among them wait. They are
handed back to the collector when training ends, fails or is interrupted, so a process that runs
more (the test stage, the next trial of a sweep, a notebook) collects them as before. A process
that froze objects itself is left as it is.
"""

import gc

from lightning.pytorch.callbacks import Callback


class FrozenHeap(Callback):
    def __init__(self) -> None:
        self._froze = False

    def on_train_start(self, trainer, pl_module) -> None:
        if gc.get_freeze_count() == 0:  # a process that froze objects itself manages its collector
            gc.freeze()
            self._froze = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._thaw()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._thaw()

    def _thaw(self) -> None:
        if self._froze:
            gc.unfreeze()
            self._froze = False
