"""Secrets: which config keys hold one, refusing them as literals on a command line (Hydra saves
the command line in .hydra/ before dtrain runs), and redacting their values wherever dtrain writes
or logs a resolved config. No torch here: the command line's preflight calls it."""

import os
import re

from dtrain.config.errors import ConfigError

REDACTED = "<redacted>"
_SECRET_WORDS = ("api_key", "token", "password", "secret")
# `<kind>_token` names a tokenizer's special token (data, not a credential).
_SPECIAL_TOKENS = frozenset({"bos", "eos", "sos", "pad", "unk", "mask", "cls", "sep", "start", "end"})
# The one form a secret may take on a command line: `${oc.env:NAME}` (optionally `${oc.env:NAME,null}`).
_FROM_ENV = re.compile(r"\$\{oc\.env:\s*[A-Za-z_][A-Za-z0-9_]*\s*(,\s*(null)?\s*)?\}")
_MIN_ENV_SECRET = 6  # shorter values of secret-named variables ("1", "true") are not searched for


def is_secret_key(name: str) -> bool:
    """A key holds a secret when its last part, case aside, is `api_key`, `token`, `password` or
    `secret`, or ends in `_api_key`, `_token`, `_password` or `_secret` (`wandb_api_key`,
    `hf_token`, `db_password`), except a tokenizer's special-token names `<kind>_token` for kind
    in bos, eos, sos, pad, unk, mask, cls, sep, start, end; whole words only, so `tokenizer`,
    `max_tokens` or `secretary` are not secrets."""
    leaf = re.split(r"[./]", str(name).lstrip("+~"))[-1].lower()
    for word in _SECRET_WORDS:
        if leaf == word:
            return True
        if leaf.endswith("_" + word):
            return not (word == "token" and leaf.removesuffix("_token") in _SPECIAL_TOKENS)
    return False


def from_environment(value) -> bool:
    """Whether a command-line value holds no secret itself: `${oc.env:NAME}`, null or empty."""
    if value is None or value == "":
        return True
    return isinstance(value, str) and _FROM_ENV.fullmatch(value.strip()) is not None


def refuse_literal_secrets(overrides) -> None:
    """Raise a one-line ConfigError for the first override (Hydra's syntax, sweeps and dict values
    included) that gives a secret key a literal value instead of `${oc.env:NAME}`. Arguments that
    are not overrides (flags such as `-m`, `--cfg job`) are left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        text = str(text)
        if text.startswith("-") or "=" not in text:
            continue
        for key, value in _assignments(parser, text):
            if is_secret_key(key) and not from_environment(value):
                raise ConfigError(
                    key, "a secret is not taken on the command line (Hydra would save it in the run's .hydra/); "
                    f"put it in an environment variable and pass {key}='${{oc.env:NAME}}'"
                )


def _assignments(parser, text: str):
    """(key, value) for every value one override sets: each choice of a sweep, each key of a dict value."""
    try:
        override = parser.parse_override(text)
    except Exception:  # not Hydra's syntax (Hydra will say so); judge the raw text
        key, _, value = text.partition("=")
        yield key.lstrip("+~"), value
        return
    if override.is_delete():
        return
    try:
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:  # a sweep with no list of values (interval(...)): numbers, not from the environment
        values = [text.partition("=")[2]]
    for value in values:
        yield from _leaves(override.key_or_group, value)


def _leaves(key: str, value):
    text = getattr(value, "text", None)  # Hydra's QuotedString in a sweep
    if text is not None:
        yield key, text
    elif isinstance(value, dict):
        if is_secret_key(key):  # `+x.token={a: b}`: a secret all the same
            yield key, value
        for child, item in value.items():
            yield from _leaves(f"{key}.{child}", item)
    elif isinstance(value, list):
        if is_secret_key(key):
            yield key, value
        for item in value:
            yield from _leaves(key, item)
    else:
        yield key, value


def environment_secrets() -> set[str]:
    """The values of environment variables named like a secret (WANDB_API_KEY, HF_TOKEN, ...)."""
    return {value for name, value in os.environ.items() if is_secret_key(name) and len(value) >= _MIN_ENV_SECRET}


def secret_values(cfg) -> set[str]:
    """Every value a secret key of `cfg` (a DictConfig, resolved here key by key, or a plain
    container) resolves to, and the environment's secrets."""
    from omegaconf import OmegaConf

    found = environment_secrets()
    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    for path in _secret_paths(tree):
        value = _select(cfg, path)
        if isinstance(value, str) and value and value != REDACTED:
            found.add(value)
    return found


def secret_keys(cfg) -> list[str]:
    """The dotted names of `cfg`'s secret keys that hold a value (not null), as written."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    return [".".join(map(str, path)) for path in _secret_paths(tree) if _raw(tree, path) is not None]


def _raw(tree, path: tuple):
    for part in path:
        tree = tree[part]
    return tree


def _secret_paths(node, prefix: tuple = ()):
    if isinstance(node, dict):
        for key, value in node.items():
            if is_secret_key(str(key)):
                yield (*prefix, key)
            else:
                yield from _secret_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _secret_paths(value, (*prefix, index))


def _select(cfg, path: tuple):
    from omegaconf import OmegaConf

    node = cfg
    try:
        for part in path:
            node = node[part]
    except Exception:  # an interpolation that cannot resolve here (a missing variable): no value to hide
        return None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def redacted(value, secrets: set[str] | None = None):
    """A plain container (e.g. `OmegaConf.to_container(cfg, resolve=True)`) with every secret
    key's value replaced by `<redacted>`, and those values and the environment's secrets cut out of
    every other string (a URL that interpolates a token, a path)."""
    if secrets is None:
        secrets = secret_values(value)
    secrets = sorted((s for s in secrets if s), key=len, reverse=True)  # a longer secret first, if one holds another
    return _redact(value, secrets)


def _redact(value, secrets: list[str]):
    if isinstance(value, dict):
        return {key: REDACTED if is_secret_key(str(key)) and value[key] is not None else _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact(item, secrets) for item in value)
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_text(text: str, secrets) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
