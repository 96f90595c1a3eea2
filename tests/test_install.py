"""A wheel works anywhere: built from this checkout, installed (not editable) into a fresh venv,
`python -m dtrain` and the `dtrain` script run from another folder on the configs the wheel ships.

The fresh venv borrows its dependencies from the venv running the tests (no download, no second
torch): a path line in a .pth file adds that site-packages folder without running the .pth files
in it, so the editable dtrain installed there (an import hook one of them installs) stays out."""

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done


def outside_env(**extra: str) -> dict:
    """An environment that does not point at the checkout or the test venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WANDB_SERVICE")}
    return {**env, "WANDB_MODE": "offline", **extra}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: pip builds in the source tree (build/, *.egg-info)
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "dtrain", source / "dtrain", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", root / "wheels", source, cwd=root)
    (wheel,) = (root / "wheels").glob("dtrain-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=root)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_dtrain_and_its_configs_come_from_the_wheel(venv, tmp_path):
    done = run(venv / "bin" / "python", "-c", "import dtrain, dtrain.config.compose as c; print(dtrain.__file__); print(c.CONF_DIR)",
               cwd=tmp_path, env=outside_env())
    module, conf = (Path(line) for line in done.stdout.split())
    assert module.is_relative_to(venv), module
    assert conf.is_relative_to(venv) and (conf / "train.yaml").is_file() and (conf / "hydra" / "help" / "dtrain.yaml").is_file()


def test_smoke_run_from_another_folder(venv, tmp_path):
    run(venv / "bin" / "python", "-m", "dtrain", "budget=smoke", "logger=[csv]", "trainer.enable_progress_bar=false",
        cwd=tmp_path, env=outside_env(DTRAIN_RUNS_DIR=str(tmp_path / "runs")))
    (metrics,) = (tmp_path / "runs").glob("*/*/metrics.csv")
    with metrics.open() as file:
        rows = list(csv.DictReader(file))
    assert any(row.get("train/loss") for row in rows) and any(row.get("test/acc") for row in rows)
    assert (metrics.parent / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("command", [("bin/python", "-m", "dtrain"), ("bin/dtrain",)], ids=["module", "script"])
def test_help_from_the_module_and_the_script(venv, tmp_path, command):
    done = run(venv / command[0], *command[1:], "--help", cwd=tmp_path, env=outside_env())
    assert done.stdout.startswith("dtrain") and "\nbudget: " in done.stdout and "\nmodel: " in done.stdout
