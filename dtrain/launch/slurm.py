"""launcher=slurm: settle nodes and devices, write the run's sbatch script, check it with Slurm, submit it."""

import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dtrain.config.errors import ConfigError

SCRIPT_NAME = "job.sbatch"
END_OF_SITE_EDITS = "# -- end of what a site edits"


TEMPLATES = ("train.sbatch", "train_multinode.sbatch", "ray_cluster.sbatch")


def template(name: str = "train.sbatch") -> str:
    """A template shipped inside the package (slurm/*.sbatch in a checkout point at these)."""
    return resources.files("dtrain.launch").joinpath("templates", name).read_text()


def write_templates(folder: Path) -> list[Path]:
    """`python -m dtrain.launch.slurm [folder]`: the by-hand templates, for a pip-installed dtrain."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TEMPLATES:
        path = folder / name
        path.write_text(template(name))
        path.chmod(0o755)
        written.append(path)
    return written


def is_slurm(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "launcher.name", default="local") == "slurm"


def in_job_step() -> bool:
    """True in a task srun started: the job itself, which must train rather than submit again."""
    return "SLURM_STEP_ID" in os.environ


def settle(cfg: DictConfig) -> None:
    """Fill launcher.tasks_per_node and refuse layouts that contradict themselves; the trainer's
    num_nodes and devices follow launcher.* by interpolation (conf/launcher/slurm.yaml)."""
    if not is_slurm(cfg):
        return
    launcher = cfg.launcher
    for key in ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "signal_lead_s", "max_requeues"):
        value = launcher.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (0 if key in ("max_requeues", "signal_lead_s") else 1)):
            raise ConfigError(f"launcher.{key}", f"expected a {'non-negative' if key in ('max_requeues', 'signal_lead_s') else 'positive'} integer, got {value!r}")
    gpus = launcher.gpus_per_node
    if gpus and str(cfg.trainer.get("accelerator")) == "cpu":
        raise ConfigError("launcher.gpus_per_node", f"asks for {gpus} GPU(s) per node but the trainer runs on the CPU (trainer.accelerator=cpu); use trainer=gpu or trainer=ddp, or drop launcher.gpus_per_node")
    if launcher.tasks_per_node is None:
        with open_dict(cfg):
            launcher.tasks_per_node = gpus or 1
    elif gpus and launcher.tasks_per_node != gpus:
        raise ConfigError("launcher.tasks_per_node", f"is {launcher.tasks_per_node} but launcher.gpus_per_node is {gpus}; Lightning runs one task per GPU, so leave tasks_per_node unset")
    for trainer_key, launcher_key in (("devices", "tasks_per_node"), ("num_nodes", "nodes")):
        if OmegaConf.is_interpolation(cfg.trainer, trainer_key):
            continue
        said = cfg.trainer.get(trainer_key)
        if str(said) != str(launcher[launcher_key]):
            raise ConfigError(f"trainer.{trainer_key}", f"is {said} but launcher.{launcher_key} is {launcher[launcher_key]}; with launcher=slurm say it once, as launcher.{launcher_key} (launcher.gpus_per_node for GPUs)")


def _sbatch_options(launcher: DictConfig, run_dir: Path) -> list[str]:
    options = {
        "job-name": launcher.job_name,
        "partition": launcher.partition,
        "account": launcher.account,
        "time": launcher.time,
        "nodes": launcher.nodes,
        "ntasks-per-node": launcher.tasks_per_node,
        "gpus-per-node": launcher.gpus_per_node,
        "cpus-per-task": launcher.cpus_per_task,
        "signal": f"USR1@{launcher.signal_lead_s}" if launcher.signal_lead_s else None,
        "requeue" if launcher.requeue else "no-requeue": True,
        "open-mode": "append",  # a requeued job adds to its log
        "output": str(run_dir / "slurm-%j.out"),
        "chdir": os.getcwd(),  # relative paths in the config mean what they meant here
    }
    # sbatch's long options use dashes; YAML keys often use underscores (mail_type: END).
    options.update({str(key).replace("_", "-"): value for key, value in (OmegaConf.to_container(launcher.extra, resolve=True) or {}).items()})
    lines = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={value}")
    return lines


def render(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> str:
    """The job script: #SBATCH lines from launcher.*, the node's setup, the run's overrides, then
    the body of the by-hand template (so both ways in run the same code on the node)."""
    launcher = cfg.launcher
    overrides = [o for o in overrides if not o.startswith("launcher.dry_run=")]
    body = template("train.sbatch").split(END_OF_SITE_EDITS, 1)[1].split("\n", 1)[1]
    python = launcher.python or sys.executable
    options, setup = _sbatch_options(launcher, run_dir), [str(line) for line in launcher.setup]
    refuse_secrets_in_script(cfg, {"launcher.extra": options, "launcher.setup": setup})
    lines = [
        "#!/bin/bash",
        f"# Written by `python -m dtrain {' '.join(shlex.quote(o) for o in overrides)}`; submit again with sbatch.",
        *options,
        *setup,
        f"export DTRAIN_RUN_DIR={shlex.quote(str(run_dir))}",
        f"export DTRAIN_MAX_REQUEUES={int(launcher.max_requeues)}",
        f"export DTRAIN_REQUEUE={1 if launcher.requeue else 0}",
        f"export DTRAIN_PYTHON=${{DTRAIN_PYTHON:-{shlex.quote(python)}}}",
        "set -- " + " ".join(shlex.quote(o) for o in overrides),
    ]
    return "\n".join(lines) + "\n" + body


def refuse_secrets_in_script(cfg: DictConfig, parts: dict[str, list[str]]) -> None:
    """The job script is a file in the run directory: no secret's value (a secret key's, or a
    secret-named environment variable's) may be written into it. The job needs none written: sbatch
    hands the submitting shell's environment to the job (--export=ALL), and the overrides keep
    `${oc.env:NAME}` as typed, resolved on the node."""
    from dtrain.config.secrets import secret_values

    secrets = secret_values(cfg)
    for key, lines in parts.items():
        if any(secret in line for line in lines for secret in secrets):
            raise ConfigError(key, "would write a secret's value into the job script; leave it out: the job inherits the environment sbatch is called in")


def _sbatch() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError("launcher", "launcher=slurm needs Slurm's sbatch, which is not installed here (not on PATH); run on a Slurm login node, or train here with launcher=local")
    return sbatch


def _slurm_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or ["sbatch failed"]
    return errors[0].removeprefix("sbatch: error: ").removeprefix("sbatch: ")


def check(script: str) -> None:
    """Ask Slurm whether it would take the job (sbatch --test-only): a partition, account or
    node count it refuses ends here, in Slurm's own words, with nothing submitted."""
    done = subprocess.run([_sbatch(), "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ConfigError("launcher", f"Slurm refuses the job: {_slurm_reason(done.stderr)}")


def preflight(cfg: DictConfig) -> None:
    """What can be known before Hydra makes a run directory: sbatch exists and Slurm takes the job."""
    settle(cfg)
    script = render(cfg, Path(cfg.hydra.run.dir).resolve(), [])
    if not cfg.launcher.dry_run:
        check(script)


def submit(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> str | None:
    """Write the job script into the run directory and submit it (unless launcher.dry_run);
    print what a person needs: the job id, the run directory, the log. Returns the job id."""
    settle(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    script = render(cfg, run_dir, overrides)
    path = run_dir / SCRIPT_NAME
    path.write_text(script)
    if cfg.launcher.dry_run:
        print(script, end="")
        print(f"dtrain: wrote {path} (dry run: nothing submitted)")
        return None
    check(script)
    done = subprocess.run([_sbatch(), "--parsable", str(path)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ConfigError("launcher", f"Slurm refuses the job: {_slurm_reason(done.stderr)}")
    job_id = done.stdout.strip().split(";")[0]
    print(f"dtrain: submitted Slurm job {job_id}\n  run directory: {run_dir}\n  log: {run_dir / f'slurm-{job_id}.out'}")
    return job_id


if __name__ == "__main__":
    for written in write_templates(Path(sys.argv[1] if len(sys.argv) > 1 else "slurm")):
        print(f"wrote {written}")
