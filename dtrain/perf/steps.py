"""Which training batches the loggers write, by Lightning's own rule, and the step they write."""


def is_logging_step(trainer) -> bool:
    """True inside a training batch whose metrics the loggers will write (so a callback or task
    may pay for a host-device synchronisation there, and nowhere else).

    Lightning counts logging steps in batches that stepped, not in optimizer steps: under manual
    optimisation (GANs) `global_step` grows by every `optimizer.step()`.
    """
    if trainer is None or trainer.log_every_n_steps <= 0:
        return False
    loop = trainer.fit_loop
    if (loop.epoch_loop._batches_that_stepped + 1) % trainer.log_every_n_steps:
        return False  # most batches: decided by one modulo (this runs several times a batch)
    # Lightning writes nothing while it accumulates gradients.
    return not (trainer.lightning_module.automatic_optimization and loop._should_accumulate())


def logged_step(trainer) -> int:
    """The step Lightning's loggers write now (the `step` column of metrics.csv): batches that
    stepped the optimizers so far, whatever the number of optimizers."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped
