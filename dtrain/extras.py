"""Optional dependencies (pyproject's extras): a missing one ends a run in one line that names the
option needing it and the extra that installs it, instead of an ImportError from deep inside."""

import importlib

from dtrain.config.errors import ConfigError

# Extras built from source against the torch already installed (pip's isolated build would have none).
NO_BUILD_ISOLATION = {"deepspeed"}


def require(extra: str, module: str | tuple[str, ...], for_what: str) -> None:
    """Raise ConfigError(`for_what`, ... pip install 'dtrain[`extra`]') unless `module` (or one of
    several alternatives) imports. A module that is installed but fails to import raises its own error."""
    modules = (module,) if isinstance(module, str) else module
    for name in modules:
        try:
            importlib.import_module(name)
            return
        except ModuleNotFoundError as error:
            missing = error.name or name
            if not (name == missing or name.startswith(f"{missing}.")):
                raise  # the module is there but something it imports is not: not ours to hide
    flags = "--no-build-isolation " if extra in NO_BUILD_ISOLATION else ""
    raise ConfigError(for_what, f"needs {' or '.join(modules)}, which is not installed: pip install {flags}'dtrain[{extra}]'")
