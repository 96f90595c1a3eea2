"""One extra local rank of a run: `python -m dtrain.launch.rank <run dir>` (started by launch.local)."""

import sys
from pathlib import Path

from dtrain.cli_errors import exit_on_config_error
from dtrain.run_dir import load_config
from dtrain.train import run

if __name__ == "__main__":
    exit_on_config_error(run, load_config(Path(sys.argv[1])))
