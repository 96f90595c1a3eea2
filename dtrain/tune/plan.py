"""A sweep's plan: the composed sweep settings, the space and the trials' base overrides,
saved in the sweep directory so that `sweep.resume=` continues exactly this sweep."""

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError
from dtrain.tune.space import Dimension, parse_space, split_space_args

TUNE_CONFIG = "tune"
PLAN_FILE = "sweep.yaml"


@dataclass
class Plan:
    settings: dict  # the `sweep` section, resolved
    train_overrides: list[str]  # before the swept keys; the sweep file's, then the command line's
    space: dict  # key: distribution string, as written
    sweep_dir: Path
    cwd: str = field(default_factory=lambda: str(Path.cwd()))

    @property
    def name(self) -> str:
        """The sweep's name, fixed at its first start: the W&B group and Ray's experiment name."""
        return f"{self.sweep_dir.parent.name}_{self.sweep_dir.name}"

    @property
    def dimensions(self) -> list[Dimension]:
        return parse_space(self.space)

    @property
    def workers(self) -> int:
        return int(self.settings["resources"]["workers"])

    def trial_dir(self, trial_id: str) -> Path:
        return self.sweep_dir / "trials" / trial_id

    def save(self) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "settings": self.settings,
            "train_overrides": self.train_overrides,
            "space": self.space,
            "cwd": self.cwd,
        }
        (self.sweep_dir / PLAN_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(record)))

    @classmethod
    def load(cls, sweep_dir: Path) -> "Plan":
        record = OmegaConf.to_container(OmegaConf.load(sweep_dir / PLAN_FILE))
        return cls(record["settings"], record["train_overrides"], record["space"], sweep_dir, record["cwd"])


def split_args(args: list[str]) -> tuple[dict, list[str], list[str]]:
    """(space entries, sweep overrides, train overrides) from dtrain.tune's command line."""
    space, rest = split_space_args(args)
    sweep_args = [a for a in rest if a.lstrip("+~").startswith(("sweep=", "sweep.", "sweep/"))]
    train_args = [a for a in rest if a not in sweep_args]
    return space, sweep_args, train_args


def compose_sweep(sweep_args: list[str]) -> DictConfig:
    """conf/tune.yaml with the chosen conf/sweep/<name>.yaml and `sweep.*` overrides."""
    from dtrain.config.compose import compose

    return compose(sweep_args, config_name=TUNE_CONFIG)


def new_sweep_dir(storage_path: str) -> Path:
    """runs/sweeps/<date>/<time>: chosen once, at the first start (a restart is told the path)."""
    now = datetime.datetime.now()
    return Path(storage_path).expanduser().resolve() / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")


def secrets_as_written(sweep: DictConfig, key: str, resolved: list | None) -> list | None:
    """The sweep's override list `key` with each override of a secret key kept as written
    (`+logger.wandb.api_key=${oc.env:NAME}`): resolved, its value would be saved in sweep.yaml and
    handed to every trial."""
    from dtrain.config.secrets import is_secret_key

    if not resolved:
        return resolved
    written = OmegaConf.to_container(sweep[key], resolve=False)
    return [text if is_secret_key(str(text).partition("=")[0]) else value for text, value in zip(written, resolved)]


def refuse_swept_secrets(space: dict) -> None:
    """Ray records every trial's sampled values (params.json, result.json, the searcher's
    state): a secret key cannot be part of the space."""
    from dtrain.config.secrets import is_secret_key

    for key in space:
        if is_secret_key(key):
            raise ConfigError(f"space.{key}", f"a secret cannot be swept (Ray records each trial's values); give every trial the same with {key}='${{oc.env:NAME}}'")


def make_plan(args: list[str]) -> Plan:
    space_args, sweep_args, train_args = split_args(args)
    resume = next((a.partition("=")[2] for a in sweep_args if a.startswith("sweep.resume=")), None)
    if resume:
        sweep_dir = Path(resume).expanduser().resolve()
        if not (sweep_dir / PLAN_FILE).is_file():
            raise ConfigError("sweep.resume", f"{sweep_dir} holds no dtrain sweep (no {PLAN_FILE}); give the directory a sweep printed at its start")
        others = [a for a in sweep_args if not a.startswith(("sweep.resume=", "sweep.address="))]
        if space_args or train_args or others:
            raise ConfigError("sweep.resume", "a resumed sweep keeps its space and overrides; give only sweep.resume= (and sweep.address=)")
        plan = Plan.load(sweep_dir)
        address = next((a.partition("=")[2] for a in sweep_args if a.startswith("sweep.address=")), None)
        if address:
            plan.settings["address"] = address
        return plan
    cfg = compose_sweep(sweep_args)
    settings = OmegaConf.to_container(cfg.sweep, resolve=True)
    for key in ("overrides", "trial_overrides"):
        settings[key] = secrets_as_written(cfg.sweep, key, settings[key])
    space = {**settings.pop("space"), **space_args}
    if not space:
        raise ConfigError("sweep.space", "nothing to sweep; add space.<key>=<distribution> or pick a sweep= that has a space")
    parse_space(space)  # bad distributions end here, before anything starts
    storage = str(settings["storage_path"])
    sweep_dir = new_sweep_dir(storage) if "://" not in storage else None
    if sweep_dir is None:
        raise ConfigError("sweep.storage_path", f"{storage}: cloud storage is for Ray's copies; give a shared filesystem path (trials are dtrain run directories)")
    return Plan(settings, [*settings.pop("overrides"), *train_args], {str(k): str(v) for k, v in space.items()}, sweep_dir)
