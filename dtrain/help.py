"""`python -m dtrain --help`: the config groups in dtrain's help template (conf/hydra/help/dtrain.yaml).

Hydra's `$APP_CONFIG_GROUPS` lists every group, pieces included; the template names the groups a
user chooses from, each as `${dtrain.group:<group>,'<what it is>'[,<option not offered>...]}`.
"""

from omegaconf import OmegaConf

RESOLVER = "dtrain.group"


def describe_group(group: str, description: str, *internal: str) -> str:
    """`<group>: <option>, ...` as Hydra's config loader sees them (every search path), then the
    description indented below; nothing for a group that has no options here."""
    from hydra.core.global_hydra import GlobalHydra

    options = [o for o in sorted(GlobalHydra.instance().config_loader().get_group_options(group)) if o not in internal]
    if not options:
        return ""
    # The help text goes through string.Template after this resolves: a `$` would be read as a variable.
    return f"{group}: {', '.join(options)}\n    {description}".replace("$", "$$")


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, describe_group)
