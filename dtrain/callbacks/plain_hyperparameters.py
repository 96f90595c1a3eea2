"""Checkpoints keep hyperparameters as plain config, so that they load with `weights_only=True`."""

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf


class PlainHyperparameters(Callback):
    """A module that stores objects with `save_hyperparameters()` (the lightning-hydra-template
    stores its `net`, an `nn.Module`, and its optimizer partials) would write them into every
    checkpoint as pickled objects, which torch's weights-only load (Lightning's own, at the test
    stage) refuses. Each such value is saved instead as the run's config of it (`model.net` of
    config.yaml, with its `_target_`); plain values stay as they are. `load_from_checkpoint(path,
    net=...)` still works: the arguments given replace the stored ones.

    The values are replaced as the checkpoint dict is made (Lightning's dump_checkpoint), not in
    on_save_checkpoint: a `save_weights_only` checkpoint skips the callbacks' hooks but still
    holds the hyperparameters."""

    def __init__(self, cfg: DictConfig):
        # Lightning's keys for the module's and the datamodule's: (values, their type), and the config of each.
        self.configs = [("hyper_parameters", "hparams_type", cfg.get("model")), ("datamodule_hyper_parameters", "datamodule_hparams_type", cfg.get("data"))]

    def setup(self, trainer, pl_module, stage: str) -> None:
        connector = trainer._checkpoint_connector
        dump = connector.dump_checkpoint
        if getattr(dump, "__self__", None) is not connector:
            return  # wrapped at an earlier stage's set-up (fit, then test)

        def dump_plain(weights_only=None) -> dict:
            return self.make_plain(dump(weights_only))

        connector.dump_checkpoint = dump_plain

    def make_plain(self, checkpoint: dict) -> dict:
        for key, type_key, config in self.configs:
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key], config)
                checkpoint.pop(type_key, None)  # a DictConfig's class: now a plain dict
        return checkpoint


def plain(value, config=None):
    """`value` as numbers, strings, tensors and containers of them; any other object as its
    `config` (a node of the run's config), or its class name when the config has none."""
    import numbers
    import os

    import torch

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, numbers.Number):  # numpy's scalars
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if OmegaConf.is_config(value):
        return _container(value)
    if isinstance(value, dict):
        return {k: plain(v, _child(config, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, _child(config, i)) for i, v in enumerate(value)]
        return tuple(items) if type(value) is tuple else items
    if OmegaConf.is_config(config):
        return _container(config)
    return f"<{type(value).__module__}.{type(value).__qualname__}, not saved>"


def _child(config, key):
    try:
        if OmegaConf.is_dict(config) and isinstance(key, str):
            return config.get(key)
        if OmegaConf.is_list(config) and isinstance(key, int) and key < len(config):
            return config[key]
    except Exception:  # a value whose interpolation fails: it has no config to save
        pass
    return None


def _container(config):
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation only the run could resolve: keep it as written
        return OmegaConf.to_container(config, resolve=False)
