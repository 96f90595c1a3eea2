"""Composing dtrain's config from overrides without the command line (tests, Ray Tune, preflight)."""

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dtrain.config.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # inside the package: a wheel ships it


def compose(
    overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path | None = None, hydra: bool = False, config_name: str = "train"
) -> DictConfig:
    """The config `python -m dtrain <overrides>` would run, with Hydra's errors made one-line.

    `run_dir` pins `paths.run_dir` (otherwise Hydra's output dir, known only inside Hydra);
    `config_name` picks another primary config of conf/ (dtrain.tune composes conf/tune.yaml).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra)
    except MissingConfigException as error:
        raise _unknown_option(error) from None
    except OverrideParseException as error:
        raise ConfigError("command line", str(error).splitlines()[0]) from None
    except ConfigCompositionException as error:
        raise _bad_key(error) from None
    except ValueError as error:  # e.g. `group=null` (Hydra removes a default with `~group`)
        raise ConfigError("command line", f"{error}; to drop a default choice write ~<group>") from None
    if run_dir is not None:
        with open_dict(cfg):
            cfg.paths.run_dir = str(run_dir)
    return cfg


def _unknown_option(error) -> ConfigError:
    group, _, option = (error.missing_cfg_file or "").rpartition("/")
    options = ", ".join(error.options or [])
    if not group:
        return ConfigError("command line", str(error).splitlines()[0])
    hint = difflib.get_close_matches(option, error.options or [], n=1)
    did_you_mean = f"did you mean {group}={hint[0]}? " if hint else ""
    return ConfigError(f"{group}={option}", f"no such option; {did_you_mean}choose one of: {options}")


def _bad_key(error) -> ConfigError:
    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    if not key:
        return ConfigError("command line", str(error).splitlines()[0])
    parent, _, name = key.rpartition(".")
    parent_node = getattr(cause, "parent_node", None)
    siblings = [str(k) for k in parent_node.keys()] if OmegaConf.is_dict(parent_node) else []
    hint = difflib.get_close_matches(name, siblings, n=1)
    did_you_mean = f"did you mean {'.'.join(filter(None, [parent, hint[0]]))}? " if hint else ""
    return ConfigError(key, f"no such key; {did_you_mean}(to add a new key on purpose, write +{key}=...)")
