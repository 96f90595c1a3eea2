"""Start-up: `--help` and a mistake on the command line end without importing torch (it alone
takes seconds to load), and dtrain's own rendering of --help prints exactly Hydra's text."""

import subprocess
import sys

import pytest

from dtrain.help import help_text
from tests.conftest import child_env

# (arguments, exit status): help, then a mistake of each kind: composition, key, type, path, name.
COMMANDS = [
    (["--help"], 0),
    (["model=resnett"], 2),
    (["trainer.max_epoch=3"], 2),
    (["trainer.max_epochs=abc"], 2),
    (["model=transformer", "data.path=/no/such/corpus"], 2),
    (["trainer.strategy=horovod"], 2),
    (["runtime.threads=0"], 2),
]


def imported(stderr: str) -> set[str]:
    """The modules `-X importtime` says the process imported."""
    return {line.rpartition("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args, status", COMMANDS, ids=[" ".join(args) for args, _ in COMMANDS])
def test_help_and_mistakes_import_no_torch(tmp_path, args, status):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dtrain", *args], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr[-2000:]
    modules = imported(done.stderr)
    assert "hydra" in modules  # the import report is there to read
    assert not {"torch", "lightning"} & modules


# Hydra's own --help path (the decorated entry point, whatever main() does before it).
HYDRAS_HELP = "import sys; sys.argv[1:] = ['--help']; from dtrain.help import register; register(); from dtrain.__main__ import hydra_main; hydra_main()"


def test_dtrains_help_prints_hydras_text(tmp_path):
    done = subprocess.run([sys.executable, "-c", HYDRAS_HELP], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert help_text() + "\n" == done.stdout
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "best.yaml").write_text("seed: 1\n")  # what a sweep leaves (README, Sweeps)
    line = next(line for line in help_text([f"hydra.searchpath=[file://{tmp_path}]"]).splitlines() if line.startswith("experiment: "))
    assert "best" in line.split(": ")[1].split(", ")


def test_every_strategy_lightning_registers_is_known_without_importing_it():
    from lightning.pytorch.strategies import StrategyRegistry

    from dtrain.config.validate import LIGHTNING_STRATEGIES

    assert set(LIGHTNING_STRATEGIES) == set(StrategyRegistry.available_strategies())
