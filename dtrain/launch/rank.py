"""One extra local rank of a run: `python -m dtrain.launch.rank <run dir>` (started by launch.local)."""

import sys
from pathlib import Path

from dtrain.cli_errors import exit_on_config_error
from dtrain.run_dir import load_config
from dtrain.train import run


def main(run_dir: Path) -> None:
    try:
        exit_on_config_error(run, load_config(run_dir))
    finally:
        # A process group left to the interpreter's exit can abort the rank ("terminate called
        # without an active exception") after a run that succeeded: close it while we can.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
