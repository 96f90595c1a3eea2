"""Regression tests for the bugs issue 12 found by reading the code (each failed before its fix)."""

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _evaluated_loss(task, batches) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer only warns
        for i, batch in enumerate(batches):
            task.validation_step(batch, i)
    return float(task.val_loss.compute())


def test_classification_loss_weighs_each_example_once():
    from dtrain.tasks.classification import Classification

    torch.manual_seed(0)
    task = Classification(nn.Linear(3, 2), functools.partial(torch.optim.SGD, lr=0.1), num_classes=2)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    # a full batch of 4 and a last batch of 1: the epoch's loss is the mean over the 5 examples
    measured = _evaluated_loss(task, [(x[:4], y[:4]), (x[4:], y[4:])])
    with torch.no_grad():
        expected = float(F.cross_entropy(task.net(x), y))
    assert measured == pytest.approx(expected, rel=1e-6)


def test_test_script_passes_each_argument_whole(tmp_path):
    """scripts/test.sh, with setup stubbed and pytest replaced by a probe that prints its
    arguments: a quoted marker expression reaches pytest as one argument."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    shutil.copy(repo / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("exit 0\n")
    probe = tmp_path / ".venv" / "bin" / "python"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    probe.chmod(0o755)
    args = ["-m", "not slow and not bars", "-k", "it's", "tests/a b.py", "$HOME"]
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "test.sh"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["-m", "pytest", *args]


def _renamed(function, name: str):
    """`function` with another code name, as a Lightning upgrade renaming a private method would leave it."""
    import types

    code = function.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)


def test_first_batch_failure_is_recognised_without_lightning_private_names(train, monkeypatch):
    from lightning.pytorch import Trainer

    from dtrain.config.errors import ConfigError

    monkeypatch.setattr(Trainer, "_run_sanity_check", _renamed(Trainer._run_sanity_check, "sanity_check_renamed"))
    wrong_net = ("model=cnn", "model.net.in_channels=3", "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match="fails on the first batch"):
        train(*wrong_net)
    # without a sanity check the failure comes in a training step: not a data/net mismatch message
    with pytest.raises(RuntimeError) as raised:
        train(*wrong_net, "trainer.num_sanity_val_steps=0")
    assert not isinstance(raised.value, ConfigError)
