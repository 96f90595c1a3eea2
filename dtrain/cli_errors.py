"""How a user's mistake ends a command: one line on stderr naming the key, exit status 2."""

import os
import sys
from collections.abc import Callable

from dtrain.config.errors import ConfigError

EXIT_CONFIG_ERROR = 2


def exit_on_config_error(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConfigError as error:
        _say(error)
    except Exception as error:  # Hydra's instantiate wraps what a constructor (a datamodule's) raises
        if not isinstance(error.__cause__, ConfigError):
            raise
        _say(error.__cause__)


def _say(error: ConfigError):
    """One line, from one process: in a multi-process run every rank meets the same mistake, and
    rank 0 speaks for them (the others exit with the same status)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0:
        print(f"dtrain: error: {error}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)
