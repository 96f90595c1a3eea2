"""A user's own class as `data._target_` or `model._target_`: leave out the keys dtrain's default
config put beside it that the class does not take.

`data._target_=my_pkg.MyDataModule` replaces only the target of the default data config
(digits): its other keys (`image_size`, `val_fraction`, ...) are dtrain's, meant for dtrain's
class, and a plain Lightning class would fail on them. Keys the user's constructor takes stay
(`batch_size`, `optimizer`, ...), and so does everything when it takes `**kwargs`. Once the
datamodule is known, a `${shapes.<name>}` it cannot fill (`model.num_classes` of the default
model) is left out too where the constructor has a default for it.
"""

import inspect
import re

from omegaconf import DictConfig, OmegaConf, open_dict

# The nodes a user points at their own class; `model.net` after `model` (a module without a
# `net` argument drops the default net first).
USER_NODES = ("data", "model", "model.net")


def _parameters(target: str) -> dict[str, inspect.Parameter] | None:
    """The arguments `target` takes by name, or None when it takes any (`**kwargs`) or cannot be read."""
    from hydra.utils import get_object

    try:
        parameters = inspect.signature(get_object(target)).parameters
    except Exception:  # not importable here, or no signature: instantiate reports it as usual
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name: p for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _missing_shape(value, shapes: dict | None) -> bool:
    """Whether `value` is `${shapes.<name>}` and the datamodule gave no such shape."""
    found = re.fullmatch(r"\$\{shapes\.(\w+)\}", value) if isinstance(value, str) else None
    return shapes is not None and found is not None and found.group(1) not in shapes


def leave_out_foreign_keys(cfg: DictConfig, shapes: dict | None = None) -> list[str]:
    """Remove, in place, the keys of each node in USER_NODES whose `_target_` lies outside dtrain
    and does not take them; return their full names (e.g. `data.image_size`).

    Given the datamodule's `shapes`, also remove a `${shapes.<name>}` the datamodule cannot fill
    where the constructor has a default of its own (a plain datamodule has no shapes)."""
    left_out = []
    for path in USER_NODES:
        node = OmegaConf.select(cfg, path, default=None)
        if not isinstance(node, DictConfig) or "_target_" not in node or str(node._target_).startswith("dtrain."):
            continue
        parameters = _parameters(str(node._target_))
        if parameters is None:
            continue
        raw = OmegaConf.to_container(node, resolve=False)
        unwanted = [
            str(key) for key, value in raw.items() if not str(key).startswith("_") and (
                key not in parameters or (_missing_shape(value, shapes) and parameters[key].default is not inspect.Parameter.empty)
            )
        ]
        with open_dict(node):
            for key in unwanted:
                del node[key]
        left_out += [f"{path}.{key}" for key in unwanted]
    return left_out
