"""Each mistake a user can make ends before training: exit status 2, a short message naming the
key and the fix, no traceback, nothing on disk created or damaged."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, dtrain_cli


def assert_clean_error(done: subprocess.CompletedProcess, key: str, cwd: Path, fix: str = "", leaves_no_run_dir: bool = True) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    message = [line for line in done.stderr.splitlines() if line.strip()]
    assert message and message[-1].startswith(f"dtrain: error: {key}"), done.stderr[-2000:]
    assert fix in message[-1]
    assert "Traceback" not in done.stderr
    assert len([line for line in message if "dtrain: error" in line or not line.startswith(("Sanity", "\r"))]) <= 3
    if leaves_no_run_dir:
        assert not (cwd / "runs").exists(), "an error must not leave a run directory behind"


def test_unknown_option_for_a_group(tmp_path):
    done = dtrain_cli("model=resnett", cwd=tmp_path)
    assert_clean_error(done, "model=resnett", tmp_path, fix="choose one of: ")
    assert "cnn" in done.stderr


def test_misspelled_key(tmp_path):
    done = dtrain_cli("model.optimizer.lrr=0.01", cwd=tmp_path)
    assert_clean_error(done, "model.optimizer.lrr", tmp_path, fix="did you mean model.optimizer.lr?")


@pytest.mark.parametrize("value", ["fast", "0", "-3e-4"])
def test_learning_rate_must_be_a_positive_number(tmp_path, value):
    done = dtrain_cli(f"model.optimizer.lr={value}", cwd=tmp_path)
    assert_clean_error(done, "model.optimizer.lr", tmp_path, fix="model.optimizer.lr=3e-4")


def test_more_devices_than_the_machine_has(tmp_path):
    done = dtrain_cli(f"trainer.devices={(os.cpu_count() or 1) + 1}", cwd=tmp_path)
    assert_clean_error(done, "trainer.devices", tmp_path, fix=f"trainer.devices={os.cpu_count()}")


def test_data_path_that_does_not_exist(tmp_path):
    done = dtrain_cli("model=transformer", f"data.path={tmp_path / 'missing.txt'}", cwd=tmp_path)
    assert_clean_error(done, "data.path", tmp_path, fix="does not exist")


def test_output_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = dtrain_cli(f"paths.runs_dir={blocker / 'runs'}", cwd=tmp_path)
    assert_clean_error(done, "paths.runs_dir", tmp_path, fix="writable")
    assert blocker.read_text() == "not a folder"


def test_gpu_trainer_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = dtrain_cli("trainer=gpu", cwd=tmp_path)
    assert_clean_error(done, "trainer.accelerator", tmp_path, fix="trainer=cpu")


def test_resume_directory_without_a_valid_checkpoint(tmp_path):
    run_dir = tmp_path / "old-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    from dtrain.config.compose import compose
    from dtrain.run_dir import fix_run_dir, save_config

    cfg = compose(["budget=smoke"], run_dir=run_dir)
    fix_run_dir(cfg)
    save_config(cfg, run_dir)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"cut short by a kill")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    done = dtrain_cli(f"resume={run_dir}", cwd=tmp_path)
    assert_clean_error(done, "resume", tmp_path, fix="no valid checkpoint")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    not_a_run = dtrain_cli(f"resume={tmp_path}", cwd=tmp_path)
    assert_clean_error(not_a_run, "resume", tmp_path, fix="not a dtrain run directory")


def test_net_that_does_not_fit_the_data(tmp_path):
    # Found once the data is loaded, inside the run: its directory exists but holds no checkpoint.
    missing_shape = dtrain_cli("model=cnn", "data=tabular", cwd=tmp_path)
    assert_clean_error(missing_shape, "model.net", tmp_path, fix="shapes.in_channels", leaves_no_run_dir=False)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
    # Fails on Lightning's one-batch sanity check, before any training step.
    wrong_size = dtrain_cli("model=cnn", "model.net.in_channels=3", "logger=[csv]", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(tmp_path / "r")})
    assert wrong_size.returncode == 2 and "Traceback" not in wrong_size.stderr
    assert "dtrain: error: model.net: dtrain.nets.cnn.ConvNet fails on the first batch" in wrong_size.stderr
    assert not list((tmp_path / "r").glob("checkpoints/*.ckpt"))


def test_config_mistakes_and_help_never_import_torch(tmp_path):
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['dtrain', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('dtrain', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    for args in (["model=nope"], ["model.optimizer.lr=x"], ["--help"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert done.stdout.strip().endswith("no torch"), (args, done.stdout[-500:], done.stderr[-500:])
