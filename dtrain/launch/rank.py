"""One extra local rank of a run: `python -m dtrain.launch.rank <run dir>` (started by launch.local)."""

import sys
import time
from pathlib import Path

from dtrain.callbacks.stop_on_signal import StoppedBySignal
from dtrain.cli_errors import exit_on_config_error
from dtrain.launch.dead_rank import leave, leave_if_parent_gone, watch_parent
from dtrain.run_dir import load_config
from dtrain.train import run


def main(run_dir: Path) -> None:
    rank0 = watch_parent(run_dir)  # rank 0 gone: one line, and this rank leaves
    try:
        exit_on_config_error(run, load_config(run_dir))
    except StoppedBySignal:
        sys.exit(0)  # the whole run stopped with a checkpoint; rank 0 says so, and ends with the status
    except BaseException:
        time.sleep(1.5)  # a collective's error may come before rank 0's exit is seen
        leave_if_parent_gone(rank0, run_dir)
        raise
    finally:
        # A process group left to the interpreter's exit can abort the rank ("terminate called
        # without an active exception") after a run that succeeded: close it while we can.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except SystemExit as stop:
        leave(stop.code)
    except BaseException:
        import traceback

        traceback.print_exc()
        leave(1)
    leave(0)
