"""The console's share of Python logging: each message once, from rank 0, without the lines a user
cannot act on; the run's log file (<run>/run.log) keeps every message of every rank.

Hydra applies dtrain/conf/hydra/job_logging/dtrain.yaml before a run starts; `start_logging`
applies the same file where Hydra did not (a resume, an extra rank, a Ray Tune trial) and routes
Lightning's messages and Python's warnings through it.
"""

import logging
import logging.config
import os
import re
import sys
from pathlib import Path

LOG_FILE = "run.log"
CONFIG = Path(__file__).resolve().parents[1] / "conf" / "hydra" / "job_logging" / "dtrain.yaml"

# What the console leaves out (run.log keeps it): (logger name prefix, message pattern, why it is
# safe to hide). This is the one place where dtrain hides a library's message.
HIDDEN = (
    ("lightning", r"^(GPU|TPU|HPU|IPU) available: ", "the start block names the devices the run uses"),
    ("lightning", r"^LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES", "per-rank device mapping; the start block names the devices"),
    ("lightning", r"^💡 Tip: ", "Lightning's adverts for its cloud products (litlogger, litmodels); a run needs neither"),
    ("lightning", r"^Initializing distributed: ", "each rank joining the process group; the start block gives strategy and devices"),
    ("lightning", r"distributed_backend=\w+\nAll distributed processes registered", "the same, once all ranks joined"),
    ("lightning.pytorch.callbacks.model_summary", r"", "the start block gives the net and its parameters; the table stays in run.log"),
    ("lightning", r"^Trainer already configured with model summary callbacks", "dtrain's callbacks give the summary on purpose"),
    # Lightning 2.6 itself calls torch's deprecated `LeafSpec` (torch 2.14 warns): nothing a user
    # can change, and Lightning's own code moves off it.
    ("py.warnings", r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's internal use of a torch API"),
    # Lightning's hint to prefix the command with `srun` fires on any machine that has srun; a
    # dtrain run goes to Slurm with launcher=slurm or slurm/*.sbatch (README, Slurm), and a run
    # outside Slurm on such a machine is no mistake.
    ("py.warnings", r"The `srun` command is available on your system but is not used", "not a mistake in a dtrain run"),
    # A resumed or requeued run continues in its own run directory on purpose, and every new run
    # gets a fresh one: a non-empty checkpoint folder is never another run's.
    ("py.warnings", r"Checkpoint directory .* exists and is not empty", "dtrain resumes runs in their own directory"),
    # W&B's own notes (run folder, `wandb sync` command, sparkline summary): the start block and
    # the end of the run say where the W&B run is and how to sync it. Its warnings still show.
    ("dtrain.wandb", r"", "W&B's notes, said once by dtrain's own start block and end"),
)


def rank() -> int:
    """This process's global rank: Lightning's once it is loaded, else the launcher's variables."""
    rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
    known = getattr(getattr(rank_zero, "rank_zero_only", None), "rank", None)
    if known is not None:
        return int(known)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


class ConsoleFilter(logging.Filter):
    """Rank 0's messages, each once, less those in HIDDEN; other ranks only show errors."""

    def __init__(self) -> None:
        super().__init__()
        self._hidden = [(name, re.compile(pattern)) for name, pattern, _why in HIDDEN]
        self._shown: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":  # Python's warning format ends in a newline; logging adds one
            record.msg = str(record.msg).rstrip()
        if record.levelno < logging.ERROR and rank() != 0:
            return False
        message = record.getMessage()
        for name, pattern in self._hidden:
            if (record.name == name or record.name.startswith(name + ".")) and pattern.search(message):
                return False
        if message in self._shown:  # Lightning warns again after any change to the warnings filters
            return False
        self._shown.add(message)
        return True


class RankField(logging.Filter):
    """Gives every record of run.log the rank that wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = rank()
        return True


class RunLogFile(logging.FileHandler):
    """<run>/run.log. On a full disk its records are dropped without logging's "--- Logging
    error ---" traceback on stderr: the run ends with its own one line about the disk."""

    def handleError(self, record: logging.LogRecord) -> None:
        import errno
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        super().handleError(record)


def _configured_by_dtrain(root: logging.Logger) -> bool:
    return any(isinstance(f, ConsoleFilter) for handler in root.handlers for f in handler.filters)


def _log_file(root: logging.Logger) -> Path | None:
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename).resolve()
    return None


def logging_config(run_dir: Path) -> dict:
    """The job_logging config Hydra would apply, with its file in `run_dir`."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}, "logging": OmegaConf.load(CONFIG)})
    return OmegaConf.to_container(cfg.logging, resolve=True)


def start_logging(run_dir: Path) -> None:
    """Apply dtrain's logging where no one configured logging yet (or it was dtrain's, for another
    run), then route Lightning's messages and Python's warnings through it. Logging someone else
    configured (pytest, a user's script) is left alone."""
    root = logging.getLogger()
    if not root.handlers or (_configured_by_dtrain(root) and _log_file(root) != (Path(run_dir) / LOG_FILE).resolve()):
        logging.config.dictConfig(logging_config(Path(run_dir).resolve()))
    if not _configured_by_dtrain(root):
        return
    logging.captureWarnings(True)  # warnings become records: run.log keeps them, the console filters them
    import lightning  # noqa: F401  its package gives itself a console handler on import

    # Lightning prints through handlers of its own besides propagating to the root logger, so each
    # of its messages would print twice: let the root's handlers alone print them.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
