"""`python -m dtrain --help`: the config groups in dtrain's help template (conf/hydra/help/dtrain.yaml).

Hydra's `$APP_CONFIG_GROUPS` lists every group, pieces included; the template names the groups a
user chooses from, each as `${dtrain.group:<group>,'<what it is>'[,<option not offered>...]}`.

`print_help` renders the same template without Hydra composing the run's config and listing every
group of every search path first (most of a second): the options are read from the config folders.
"""

import string
import sys
from pathlib import Path

from omegaconf import OmegaConf

from dtrain.config.compose import CONF_DIR

RESOLVER = "dtrain.group"
TEMPLATE = CONF_DIR / "hydra" / "help" / "dtrain.yaml"
HELP_FLAGS = ("--help", "-h")

# Config folders besides CONF_DIR that print_help lists options from (`hydra.searchpath=[file://...]`).
_search_dirs: list[Path] = []


def _options_on_disk(group: str) -> list[str]:
    return sorted({p.stem for folder in (CONF_DIR, *_search_dirs) for p in (folder / group).glob("*.yaml")})


def _options(group: str) -> list[str]:
    """The group's options as Hydra's config loader sees them (every search path) while Hydra
    runs; from the config folders otherwise."""
    global_hydra = sys.modules.get("hydra.core.global_hydra")
    if global_hydra is not None and global_hydra.GlobalHydra.instance().is_initialized():
        return sorted(global_hydra.GlobalHydra.instance().config_loader().get_group_options(group))
    return _options_on_disk(group)


def describe_group(group: str, description: str, *internal: str) -> str:
    """`<group>: <option>, ...`, then the description indented below; nothing for a group that
    has no options here."""
    options = [o for o in _options(group) if o not in internal]
    if not options:
        return ""
    # The help text goes through string.Template after this resolves: a `$` would be read as a variable.
    return f"{group}: {', '.join(options)}\n    {description}".replace("$", "$$")


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, describe_group)


def wants_help(args: list[str]) -> bool:
    """A command line asking for dtrain's help and nothing else of Hydra's (`--hydra-help`, `--cfg`, ...)."""
    flags = [a for a in args if a.startswith("-")]
    return bool(flags) and all(flag in HELP_FLAGS for flag in flags)


def help_text(args: list[str] = ()) -> str:
    """The text Hydra's `--help` prints with dtrain's template, for these command-line arguments
    (only `hydra.searchpath=[file://...]` among them changes it: more options to list)."""
    register()
    _search_dirs[:] = [Path(entry.removeprefix("file://")) for entry in _search_path(args) if entry.startswith("file://")]
    try:
        root = OmegaConf.create({"hydra": {"help": OmegaConf.load(TEMPLATE)}})
        return string.Template(root.hydra.help.template).safe_substitute()
    finally:
        _search_dirs.clear()


def _search_path(args) -> list[str]:
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            return [entry.strip().strip("'\"") for entry in value.strip("[]").split(",") if entry.strip()]
    return []


def print_help(args: list[str] = ()) -> None:
    print(help_text(args))
