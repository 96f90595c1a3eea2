"""Whether the exception that ended a fit came from Lightning's sanity check, read through public
hooks (`on_exception` runs before Lightning resets the trainer's stage), so it survives a
Lightning upgrade that renames the loop's private methods."""

import lightning as L


class SanityCheckFailure(L.Callback):
    def __init__(self):
        self.failed = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.failed = trainer.sanity_checking


def failed_in_sanity_check(trainer) -> bool:
    return any(isinstance(callback, SanityCheckFailure) and callback.failed for callback in trainer.callbacks)
