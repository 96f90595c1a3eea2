"""Under torchrun or srun, a rank whose collective fails because another rank died says so in
one line, at once, and exits (status 2).

The launcher ends the survivors of a dead rank with SIGTERM within a fraction of a second
(torchrun's agent polls its workers), so a report that waited for Lightning's teardown and the
trip up to dtrain's error line would be cut short without a word. This runs in Lightning's
first hook after the failure instead: SIGTERM ignored (the process is ending anyway), the
loggers closed (metrics.csv keeps every row it had), the line printed by the lowest-numbered
surviving rank, then an immediate exit; the broken process group has nothing left to tear down.

Ranks dtrain starts itself are watched by rank 0 instead (dtrain.launch.local), which knows
each one's process and how it ended.
"""

import signal
import sys
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dtrain.cli_errors import EXIT_CONFIG_ERROR


class ReportDeadPeer(Callback):
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from dtrain.launch.dead_rank import launched_by_cluster_launcher, leave, peer_died, speaks_for_survivors

        if trainer.world_size < 2 or not launched_by_cluster_launcher():
            return
        main = threading.current_thread() is threading.main_thread()
        before = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        run_dir = Path(trainer.default_root_dir)
        died = peer_died(str(exception), run_dir)
        if died is None:
            if main:
                signal.signal(signal.SIGTERM, before)  # not a dead peer: the usual way out
            return
        from dtrain.train import finish_loggers

        try:
            finish_loggers(trainer.loggers, "failed")
        except Exception:  # the report matters more than the loggers' last rows
            pass
        if speaks_for_survivors(run_dir, trainer.global_rank):
            print(f"dtrain: error: {died}", file=sys.stderr, flush=True)
        leave(EXIT_CONFIG_ERROR)
