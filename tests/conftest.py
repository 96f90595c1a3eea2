"""Shared fixtures: compose a run the way the command line would and run it in-process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test.sh runs a pytest-xdist worker per core: one thread each (before torch loads)
    # keeps the cores from being oversubscribed, and every run's `runtime.threads=auto` the same
    # whatever the other workers are doing, so runs a test compares bitwise reduce alike.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The longest files first, so that pytest-xdist's workers (scripts/test.sh, one file each at a
# time) end together instead of one of them finishing these alone.
LONGEST_FIRST = ("test_tune.py", "test_cli.py", "test_ddp.py", "test_training_options.py", "test_strategies_sharded.py",
                 "test_resume.py", "test_resume_strategies.py", "test_dead_rank.py", "test_models_vision.py", "test_models_sequence.py")


@pytest.fixture
def train(tmp_path):
    """train(*overrides) -> (metrics, run_dir): `python -m dtrain <overrides>`, in this process.

    W&B is left out unless a test asks for it (`logger=[csv,wandb]`): it starts a service.
    """
    from dtrain.config.compose import compose
    from dtrain.train import run

    counter = iter(range(1000))

    def _train(*overrides: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / f"run{next(counter)}"
        args = ["logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides]
        cfg = compose(args, run_dir=run_dir)
        return run(cfg), run_dir

    return _train


def child_env(**extra: str) -> dict:
    """The environment for a dtrain process a test starts: without the W&B service this test
    process may have started (a child would register its runs there, outliving a killed child)."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # tests.probes
    return {**env, "PYTHONPATH": pythonpath, **extra}


def dtrain_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m dtrain <args>` as a user would run it; runs go under `cwd`/runs."""
    full_env = child_env(DTRAIN_RUNS_DIR=str(cwd / "runs"), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "dtrain", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def record_bar(record_property):
    """record_bar(metric, measured, bar): shown with the test's wall time (time to the bar) in a
    table at the end of the session."""

    def _record(metric: str, measured: float, bar: float) -> None:
        record_property("bar", {"metric": metric, "measured": round(float(measured), 4), "bar": round(float(bar), 4)})

    return _record


def pytest_terminal_summary(terminalreporter):
    """The convergence bars this session measured: one JSON line per bar test, with its wall time."""
    rows = []
    for outcome in ("passed", "failed", "xfailed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "bar" and report.when == "call":
                    rows.append({"test": report.nodeid.split("::", 1)[1], "outcome": outcome, **value, "seconds": round(report.duration)})
    if rows:
        import json

        terminalreporter.section("convergence bars (time to bar)")
        for row in rows:
            terminalreporter.write_line(json.dumps(row))


@pytest.fixture
def fault_record(request):
    """`fault_record(fault, strategy, survived=, nothing_lost=, message=)`: this test's result for the
    README's fault matrix (tests/fault_matrix.py); call it after the test's assertions."""
    from tests.fault_matrix import record

    def _record(fault: str, strategy: str, *, survived: bool | None, nothing_lost: bool | None, message: bool | None) -> None:
        record(request.node.nodeid, fault, strategy, survived, nothing_lost, message)

    return _record


def pytest_collection_modifyitems(items):
    """The longest files first; the fault matrix's test reads what the other tests recorded: it
    runs last (scripts/test.sh runs it on its own, after the workers)."""

    def order(item) -> int:
        name = item.nodeid.split("::", 1)[0].rpartition("/")[2]
        if name == "test_fault_matrix.py":
            return len(LONGEST_FIRST) + 1
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=order)  # stable: each file's tests keep their order
