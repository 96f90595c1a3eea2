"""What every run records (README, "What every run records"), as one Lightning callback made of
parts: throughput and MFU, memory, the optimizer's figures, the convergence summary.

One callback, not one per part: Lightning calls every hook of every callback at every batch
(about 1.8 us per hook and callback here), which four callbacks paid four times over. The
per-step figures of all parts go straight to the run's loggers in one write per logging step,
not through `self.log`: Lightning keeps every logged key in its result collection and walks
all of them at every batch (12 keys logged every 10th step made a small net's every step
0.4 ms, 50%, slower here); a logger write costs only on the step that writes.

    callbacks.records.parts.<name>: a part; `~callbacks.records.parts.memory` drops one,
    `~callbacks.records` records nothing.
"""

from lightning.pytorch.callbacks import Callback

from dtrain.perf.part import RecordPart
from dtrain.perf.steps import is_logging_step, logged_step


class Records(Callback):
    def __init__(self, parts: dict[str, RecordPart]):
        self.parts = {name: part for name, part in dict(parts).items() if part is not None}
        # Per step hook, only the parts that do something there: the step hooks run at every
        # batch, right after the step's compute, where each call of a no-op costs most.
        self._doing = {hook: [part for part in self.parts.values() if overrides(part, hook)] for hook in STEP_HOOKS}
        self._figures: dict = {}  # this logging step's, until the batch ends
        self._logging = False  # whether this batch is a logging step (decided once, at its start)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            for part in self.parts.values():
                part.setup(trainer, pl_module)

    def on_train_start(self, trainer, pl_module) -> None:
        for part in self.parts.values():
            part.train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for part in self.parts.values():
            part.train_epoch_start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._logging = is_logging_step(trainer)  # Lightning's count it reads moves only after the batch
        for part in self._doing["batch_start"]:
            part.batch_start(trainer, pl_module, batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._logging:
            for part in self._doing["before_optimizer_step"]:
                part.before_optimizer_step(trainer, optimizer, self._figures)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        logging = self._logging
        for part in self._doing["batch_end"]:
            part.batch_end(trainer, pl_module, batch, logging, self._figures)
        if logging:
            figures, self._figures = self._figures, {}
            write_figures(trainer, figures)

    def on_validation_start(self, trainer, pl_module) -> None:
        for part in self.parts.values():
            part.validation_start(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        for part in self.parts.values():
            part.validation_end(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        from dtrain.perf.summary import write_summary

        summary = {}
        for part in self.parts.values():
            summary.update(part.summary(trainer, pl_module))  # every rank: a part may reduce over ranks
        write_summary(trainer, summary)

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state.get(name, {}))


STEP_HOOKS = ("batch_start", "before_optimizer_step", "batch_end")


def overrides(part: RecordPart, hook: str) -> bool:
    return getattr(type(part), hook) is not getattr(RecordPart, hook)


def write_figures(trainer, figures: dict) -> None:
    """One logging step's figures to every logger, from rank 0, at the step Lightning's own
    metrics of this batch are written (the `step` column of metrics.csv)."""
    if not figures or not trainer.is_global_zero:
        return
    scalars = {key: float(value) for key, value in figures.items()}  # the one read of device values
    step = logged_step(trainer)
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=step)
