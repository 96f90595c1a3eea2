"""How a user's mistake ends a command: one line on stderr naming the key, exit status 2."""

import sys
from collections.abc import Callable

from dtrain.config.errors import ConfigError

EXIT_CONFIG_ERROR = 2


def exit_on_config_error(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConfigError as error:
        print(f"dtrain: error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    except Exception as error:  # Hydra's instantiate wraps what a constructor (a datamodule's) raises
        if not isinstance(error.__cause__, ConfigError):
            raise
        print(f"dtrain: error: {error.__cause__}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
