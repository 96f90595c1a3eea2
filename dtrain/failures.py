"""Failures met while training that have a known cause and fix (out of memory, a full disk, a
data loader worker that died, a label the net has no class for, a sample that cannot be read,
another rank that died or hung, a checkpoint that would run code), turned into dtrain's one-line
errors (exit 2) instead of tracebacks."""

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dtrain.config.errors import ConfigError

PLAN = "`python -m dtrain.plan <the same overrides>` estimates the memory a run needs"


class BadSample(ConfigError):
    """A sample the data cannot be read from (a corrupt file), naming it.

    Raised inside DataLoader worker processes too: torch re-raises a worker's exception in the
    main process by calling its class with the worker's formatted traceback alone, whose last
    line is `<module>.BadSample: <key>: <message>`, so one argument rebuilds it.
    """

    def __init__(self, key: str, message: str | None = None):
        if message is None:
            key, _, message = key.strip().splitlines()[-1].partition("BadSample: ")[2].partition(": ")
        super().__init__(key, message)


class OutOfMemory(ConfigError):
    """The run needed more host or GPU memory than there was."""


class DiskFull(ConfigError):
    """A write of the run's (a checkpoint, a log) found its disk full."""


class CollectiveTimeout(ConfigError):
    """A collective waited out runtime.collective_timeout_s for a rank that did not answer."""


class DataWorkerDied(ConfigError):
    """A DataLoader worker process ended without an answer (killed, crashed in C code)."""


@contextmanager
def known_failures(run_dir: Path | None = None) -> Iterator[None]:
    """Within: a failure with a known cause ends in one line (see `as_config_error`)."""
    from dtrain.launch.dead_rank import launched_by_cluster_launcher, note_rank

    if run_dir is not None and launched_by_cluster_launcher():
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        note_rank(run_dir, rank_zero_only.rank)  # so that a survivor can name this rank if it dies
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        known = as_config_error(error, run_dir)
        if known is None:
            raise
        raise known from None


def as_config_error(error: BaseException, run_dir: Path | None = None) -> ConfigError | None:
    """The one-line error for a failure with a known cause, else None."""
    import torch

    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left on device" in text:
        return _disk_full(first, run_dir)
    if isinstance(error, torch.OutOfMemoryError) or "CUDA out of memory" in text:
        return OutOfMemory("memory", f"the GPU ran out of memory ({_short(first)}); {PLAN}; lower data.batch_size, "
                                     "or pick a sharded strategy or a lower precision")
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "DefaultCPUAllocator" in text:
        return OutOfMemory("memory", f"the host ran out of memory ({_short(first)}); {PLAN}; lower data.batch_size "
                                     "or data.num_workers")
    if isinstance(error, RuntimeError) and re.search(r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) (?:exited unexpectedly|is killed)", text):
        return DataWorkerDied("data.num_workers", f"a data loader worker process died ({_short(first)}); "
                                                 "data.num_workers=0 loads in the main process, where its error shows")
    timed_out = re.search(r"Timed out waiting (\d+)ms for \w+ operation", text)  # gloo's words
    if isinstance(error, RuntimeError) and timed_out:
        return _collective_timeout(int(timed_out.group(1)) / 1000, run_dir)
    if isinstance(error, RuntimeError):
        from dtrain.launch.dead_rank import peer_died

        died = peer_died(text, run_dir)
        if died is not None:
            return died
    from dtrain.checkpoints import TRUST_KEY, UnsafeCheckpoint

    if isinstance(error, UnsafeCheckpoint):  # a sharded checkpoint's file replaced after dtrain checked it
        return ConfigError(TRUST_KEY, f"{error}, so it was not loaded; remove it, or give {TRUST_KEY}=true on the command line if you trust it")
    if isinstance(error, IndexError) and re.search(r"Target -?\d+ is out of bounds", text):
        return ConfigError("data", f"a label is outside the net's classes ({first}); labels must be 0 to num_classes - 1 "
                                   "(model.num_classes, or the data's shapes.num_classes)")
    return None


def _disk_full(what: str, run_dir: Path | None) -> DiskFull:
    if run_dir is None:
        return DiskFull("paths.runs_dir", f"the run's disk is full ({_short(what)}); free space on it and resume the run")
    from dtrain.checkpoints import newest_valid_checkpoint

    try:
        last = newest_valid_checkpoint(Path(run_dir))
    except Exception:  # the message must not fail on the full disk it reports
        last = None
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was completed"
    return DiskFull("paths.runs_dir", f"the disk of {run_dir} is full ({_short(what)}); {kept}; free space on it, "
                                      f"then continue with `python -m dtrain resume={run_dir}`")


def _collective_timeout(seconds: float, run_dir: Path | None) -> CollectiveTimeout:
    from dtrain.checkpoints import newest_valid_checkpoint

    last = newest_valid_checkpoint(Path(run_dir)) if run_dir is not None else None
    kept = f"the last good checkpoint is {last}; continue with `python -m dtrain resume={run_dir}`" if last else "no checkpoint was written yet"
    return CollectiveTimeout("runtime.collective_timeout_s", f"a rank stopped answering: a collective waited {seconds:g} s for it "
                                                           f"(hung, or working alone far longer than the others); {kept}. "
                                                           "If one rank does long work alone (a first DeepSpeed build), raise the setting")


def _short(line: str, limit: int = 160) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
