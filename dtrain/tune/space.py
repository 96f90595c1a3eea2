"""The search space: `key: distribution(args)` strings parsed into Ray Tune domains, with the bounds checked."""

import ast
import math
import re
from dataclasses import dataclass

from dtrain.config.errors import ConfigError

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "qrandint")
_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Dimension:
    """One swept key: `model.optimizer.lr` (a config value) or `model/net` (a config-group choice)."""

    key: str
    kind: str
    args: tuple

    @property
    def is_group(self) -> bool:
        return "/" in self.key

    @property
    def param(self) -> str:
        """The name Tune and Optuna see: no '/' (Tune flattens nested configs on '/')."""
        return self.key.replace("/", "__")

    def domain(self):
        from ray import tune

        lo, hi = (self.args + (None, None))[:2]
        return {
            "choice": lambda: tune.choice(list(self.args)),
            "grid": lambda: tune.grid_search(list(self.args)),
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "randint": lambda: tune.randint(lo, hi),
            "qrandint": lambda: tune.qrandint(lo, hi, self.args[2]),
        }[self.kind]()

    def override(self, value) -> str:
        """The command-line override that sets this key to `value`, as `python -m dtrain` takes it."""
        return f"{self.key}={format_value(value)}"


def format_value(value) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _literal(text: str):
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a group option (`lstm`) or a string value


def _split_args(body: str) -> list[str]:
    """Split on top-level commas (a choice may hold lists: `choice([64,64],[128])`)."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_dimension(key: str, spec) -> Dimension:
    where = f"space.{key}"
    match = _CALL.match(str(spec))
    if not match:
        raise ConfigError(where, f"expected a distribution like loguniform(1e-4,1e-2), got {spec!r}; use one of {', '.join(DISTRIBUTIONS)}")
    kind, body = match.group(1), match.group(2)
    if kind not in DISTRIBUTIONS:
        import difflib

        hint = difflib.get_close_matches(kind, DISTRIBUTIONS, n=1)
        did_you_mean = f"did you mean {hint[0]}? " if hint else ""
        raise ConfigError(where, f"unknown distribution {kind!r}; {did_you_mean}use one of {', '.join(DISTRIBUTIONS)}")
    args = tuple(_literal(part) for part in _split_args(body))
    _check_bounds(where, kind, args)
    if "/" in key and kind not in ("choice", "grid"):
        raise ConfigError(where, f"a config-group choice takes choice(...) or grid(...), not {kind}")
    return Dimension(key, kind, args)


def _check_bounds(where: str, kind: str, args: tuple) -> None:
    if kind in ("choice", "grid"):
        if not args:
            raise ConfigError(where, f"{kind}() needs at least one value")
        return
    wanted = 3 if kind == "qrandint" else 2
    if len(args) != wanted or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(where, f"{kind} takes {wanted} numbers, got {args}")
    lo, hi = args[:2]
    if not lo < hi:
        raise ConfigError(where, f"{kind}({lo},{hi}): the lower bound must be below the upper one")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(where, f"loguniform({lo},{hi}): bounds must be positive (log of {lo} is undefined); e.g. loguniform(1e-5,{hi})")
    if kind in ("randint", "qrandint") and not all(isinstance(a, int) for a in args):
        raise ConfigError(where, f"{kind} takes integers, got {args}")
    if kind == "qrandint" and args[2] <= 0:
        raise ConfigError(where, f"qrandint's step must be positive, got {args[2]}")
    if any(math.isinf(a) or math.isnan(a) for a in args):
        raise ConfigError(where, f"{kind} bounds must be finite, got {args}")


def parse_space(entries: dict) -> list[Dimension]:
    return [parse_dimension(str(key), spec) for key, spec in entries.items()]


def split_space_args(args: list[str]) -> tuple[dict, list[str]]:
    """Take the `space.<key>=<distribution>` arguments out before Hydra sees them (it would
    read `choice(...)` as its own sweep syntax)."""
    space, rest = {}, []
    for arg in args:
        if arg.startswith("space."):
            key, sep, spec = arg[len("space."):].partition("=")
            if not sep or not key:
                raise ConfigError(arg, "expected space.<key>=<distribution>, e.g. space.model.optimizer.lr='loguniform(1e-4,1e-2)'")
            space[key] = spec
        else:
            rest.append(arg)
    return space, rest
