"""The interface of one part of dtrain's Records callback (dtrain/callbacks/records.py)."""


class RecordPart:
    """One kind of record. Each hook is optional; `batch_end` and `before_optimizer_step` add
    the figures of a logging step to `figures` (floats, or device tensors: they are read once,
    together, when written), `summary` gives the keys it adds to summary.json at the end of fit."""

    def setup(self, trainer, pl_module) -> None: ...

    def train_start(self, trainer, pl_module) -> None: ...

    def train_epoch_start(self, trainer, pl_module) -> None: ...

    def batch_start(self, trainer, pl_module, batch) -> None: ...

    def before_optimizer_step(self, trainer, optimizer, figures: dict) -> None: ...

    def batch_end(self, trainer, pl_module, batch, logging: bool, figures: dict) -> None: ...

    def validation_start(self, trainer, pl_module) -> None: ...

    def validation_end(self, trainer, pl_module) -> None: ...

    def summary(self, trainer, pl_module) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...
