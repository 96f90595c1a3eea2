"""The command line: `python -m dtrain [overrides]`, `-m` for a multirun, `resume=<run dir>`."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dtrain.cli_errors import EXIT_CONFIG_ERROR, exit_on_config_error
from dtrain.config.compose import CONF_DIR
from dtrain.config.errors import ConfigError

# Keys a continued run may change; anything else would make it a different run.
RESUMABLE_KEYS = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.devices", "trainer.num_nodes",
    "trainer.accelerator", "trainer.enable_progress_bar", "trainer.log_every_n_steps", "test", "logger.wandb.mode",
    "runtime.trust_checkpoints", "runtime.skip_nonfinite", "runtime.collective_timeout_s",
    "runtime.activation_checkpointing", "runtime.compile",
)


# An absolute path: Hydra takes a relative one from the calling module when dtrain starts as the
# `dtrain` console script, and looks for an importable `dtrain.conf` package, which there is not.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    from dtrain.launch.slurm import in_job_step, is_slurm

    if is_slurm(cfg) and not in_job_step():  # launcher=slurm: submit this run (each of a multirun) and return
        exit_on_config_error(submit_to_slurm, cfg)
        return
    from hydra.core.hydra_config import HydraConfig

    from dtrain.train import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        exit_on_config_error(run, cfg)
    except SystemExit as stop:
        if stop.code == EXIT_CONFIG_ERROR and not cfg.get("resume"):
            discard_unstarted_run(run_dir)  # a mistake found inside run() (a datamodule's) leaves nothing
        raise


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run that a config error stopped before it trained,
    and its date folder if that is left empty. Only a folder holding nothing but what Hydra and
    dtrain write at a run's start is removed (never one a user pointed hydra.run.dir at)."""
    import shutil

    # Hydra's and dtrain's files, and what the loggers write when they start (no metrics yet).
    written_at_start = {".hydra", "config.yaml", "run.log", "env.json", "hparams.yaml", "wandb", "lightning_logs", ".ranks"}
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - written_at_start:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()  # only when empty
    except OSError:
        pass


def submit_to_slurm(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from dtrain.config.validate import validate
    from dtrain.launch.slurm import submit

    validate(cfg)  # the submitting host's devices are not checked: a login node has no GPUs
    submit(cfg, Path(HydraConfig.get().runtime.output_dir).resolve(), list(HydraConfig.get().overrides.task))


def preflight(overrides: list[str]) -> None:
    """Compose once before Hydra does, so that a mistake ends in one line and leaves no run
    directory behind (Hydra would create it before our code runs)."""
    from dtrain.config.compose import compose
    from dtrain.config.validate import check_devices, validate, writable_dir

    cfg = compose(overrides, hydra=True)
    validate(cfg)
    from dtrain.launch.slurm import in_job_step, is_slurm

    if is_slurm(cfg) and not in_job_step():
        from dtrain.launch.slurm import preflight as slurm_preflight

        slurm_preflight(cfg)  # sbatch exists and Slurm takes the job, before Hydra makes a run directory
    else:
        from dtrain.parallel.dims import ParallelDims

        ParallelDims.from_config(cfg.trainer, check_devices(cfg.trainer))  # the strategy's sizes fit the processes
    if not writable_dir(Path(cfg.hydra.run.dir)):
        raise ConfigError("hydra.run.dir", f"cannot create {cfg.hydra.run.dir}; set paths.runs_dir to a writable folder")


def resume(run_dir: str, overrides: list[str]) -> None:
    """Continue the run in `run_dir` with its saved config, changing only RESUMABLE_KEYS."""
    import yaml
    from omegaconf import OmegaConf, open_dict

    from dtrain.run_dir import CONFIG_FILE, load_config

    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise ConfigError("resume", f"{run_dir} is not a dtrain run directory (no {CONFIG_FILE}); give the directory a run printed at its end")
    cfg = load_config(Path(run_dir))
    # Whoever wrote the directory does not decide whether its checkpoints are trusted: only this command line does.
    OmegaConf.update(cfg, "runtime.trust_checkpoints", False, merge=False, force_add=True)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key not in RESUMABLE_KEYS:
            raise ConfigError(key, f"cannot be changed when resuming; a resumed run may change only {', '.join(RESUMABLE_KEYS)}")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    with open_dict(cfg):
        cfg.resume = str(Path(run_dir).resolve())
    from dtrain.train import run

    run(cfg)


def refuse_secrets(args: list[str]) -> None:
    """Before anything else (Hydra saves the command line in the run's .hydra/ before dtrain's
    code runs, and `--cfg job --resolve` prints what the environment gives): every path in
    (a run, -m, resume=, --cfg) refuses a secret given as a literal, and --resolve one that would print."""
    from dtrain.config.secrets import refuse_literal_secrets

    refuse_literal_secrets(args)
    if "--resolve" not in args:
        return
    from dtrain.config.compose import compose
    from dtrain.config.secrets import secret_keys

    try:
        cfg = compose([a for a in args if "=" in a and not a.startswith("-")], hydra=True)
    except ConfigError:
        return  # a mistake Hydra reports itself; nothing is printed
    held = secret_keys(cfg)
    if held:
        raise ConfigError("--resolve", f"would print the value of the secret {held[0]}; leave out --resolve (the config then shows ${{oc.env:...}})")


def main() -> None:
    from dtrain.help import print_help, register, wants_help

    args = sys.argv[1:]
    if wants_help(args):  # rendered from conf/ directly: Hydra's own --help composes the whole config first
        print_help(args)
        return
    register()  # --help's config groups (conf/hydra/help/dtrain.yaml), for Hydra's flags beside --help
    exit_on_config_error(refuse_secrets, args)
    resumes = [a for a in args if a.startswith("resume=")]
    if resumes:
        others = [a for a in args if not a.startswith("resume=")]
        exit_on_config_error(resume, resumes[-1].partition("=")[2], others)
        return
    if not any(a.startswith("-") for a in args):  # a single run (flags: multirun, --help, --cfg)
        exit_on_config_error(preflight, args)
    hydra_main()


if __name__ == "__main__":
    main()
