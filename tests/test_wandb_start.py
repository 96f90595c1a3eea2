"""A W&B run starts without importing W&B Launch unless the program staged Launch job inputs."""

import json
import sys

from lightning.pytorch.callbacks import Callback

from tests.conftest import dtrain_cli


class ModulesProbe(Callback):
    """Writes which of W&B's Launch modules this process imported, once training starts."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, pl_module):
        with open(self.path, "w") as f:
            json.dump(sorted(name for name in sys.modules if name.startswith("wandb.sdk.launch")), f)


def test_a_run_with_wandb_never_imports_wandb_launch(tmp_path):
    probe = tmp_path / "modules.json"
    out = dtrain_cli("model=mlp", "budget=smoke", "test=false", "logger=[csv,wandb]",
                     "+callbacks.probe._target_=tests.test_wandb_start.ModulesProbe", f"+callbacks.probe.path={probe}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(probe.read_text()) == []
    (run_file,) = (tmp_path / "runs").rglob("run-*.wandb")  # the W&B run itself started
    assert run_file.stat().st_size > 0


def test_staged_launch_inputs_are_still_applied(monkeypatch):
    from wandb.sdk.wandb_run import Run

    from dtrain.loggers.wandb import LAUNCH_INPUTS, skip_launch_inputs_never_staged

    applied = []
    monkeypatch.setattr(Run, "_detect_and_apply_job_inputs", lambda run: applied.append(run))
    skip_launch_inputs_never_staged()
    skip_launch_inputs_never_staged()  # guarded once only
    monkeypatch.delitem(sys.modules, LAUNCH_INPUTS, raising=False)
    Run._detect_and_apply_job_inputs("run without staged inputs")
    monkeypatch.setitem(sys.modules, LAUNCH_INPUTS, object())  # a program that staged inputs imported it
    Run._detect_and_apply_job_inputs("run with staged inputs")
    assert applied == ["run with staged inputs"]
