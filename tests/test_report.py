"""python -m dtrain.report: the figures hold each run's logged values, for one run and for many."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dtrain.report import comparison_figure, curves_figure, main, system_figure
from dtrain.reporting.runs import load_run, load_runs
from tests.conftest import child_env


def lines(fig, title: str, x: str = "step") -> list:
    """The lines of the panel titled `title` whose x axis is steps (x="step") or time."""
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title() == title and (ax.get_xlabel() == "step") == (x == "step")]
    assert len(axes) == 1, f"one panel {title!r} against {x}, got {len(axes)}"
    return axes[0].get_lines()


def write_run(path: Path, loss: list[float], val_acc: list[float], step_time: float) -> Path:
    """A run directory with a metrics.csv as Lightning's CSV logger writes it: training rows
    every 10 steps, a validation row every 20, empty cells where a metric was not logged."""
    rows = []
    for i, value in enumerate(loss):
        step = 10 * (i + 1)
        rows.append({"step": step, "train/loss": value, "train/step_time_s": step_time, "train/samples_per_sec": 64 / step_time})
        if step % 20 == 0:
            rows.append({"step": step, "val/loss": value + 0.1, "val/acc": val_acc[i // 2]})
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    return path


def test_comparison_has_one_line_per_trial_with_its_values(tmp_path):
    sweep = tmp_path / "sweep"
    losses = {"a": [2.0, 1.5, 1.0, 0.8], "b": [2.2, 1.2, 0.9, 0.7], "c": [1.9, 1.9, 1.8, 1.8]}
    accs = {"a": [0.5, 0.7], "b": [0.6, 0.8], "c": [0.2, 0.25]}
    for name in losses:
        write_run(sweep / "trials" / name, losses[name], accs[name], step_time={"a": 0.5, "b": 1.0, "c": 2.0}[name])

    runs = load_runs([sweep])
    fig = comparison_figure(runs)

    loss_lines = lines(fig, "train/loss")
    assert [line.get_label() for line in loss_lines] == ["a", "b", "c"]
    for line in loss_lines:
        np.testing.assert_allclose(line.get_xdata(), [10, 20, 30, 40])
        np.testing.assert_allclose(line.get_ydata(), losses[line.get_label()])
    for line in lines(fig, "val/acc"):
        np.testing.assert_allclose(line.get_xdata(), [20, 40])
        np.testing.assert_allclose(line.get_ydata(), accs[line.get_label()])
    # Time is the logged step times summed: 10 steps per row at 0.5, 1 and 2 s a step.
    for line in lines(fig, "val/acc", x="seconds"):
        per_step = {"a": 0.5, "b": 1.0, "c": 2.0}[line.get_label()]
        np.testing.assert_allclose(line.get_xdata(), [20 * per_step, 40 * per_step])
    assert len(lines(fig, "train/samples_per_sec", x="seconds")) == 3


def test_time_from_samples_per_sec_when_no_step_time(tmp_path):
    run_dir = write_run(tmp_path / "run", [1.0, 0.9, 0.8], [0.5], step_time=0.25)
    df = pd.read_csv(run_dir / "metrics.csv").drop(columns="train/step_time_s")
    df.to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "config.yaml").write_text("data:\n  batch_size: 64\n")

    run = load_run(run_dir)

    np.testing.assert_allclose(run.series("train/loss")["seconds"], [2.5, 5.0, 7.5])
    assert "samples_per_sec" in run.seconds_source


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """A Hydra multirun's layout (numbered job folders) holding two real short runs."""
    from dtrain.config.compose import compose
    from dtrain.train import run

    root = tmp_path_factory.mktemp("multirun")
    for job, lr in enumerate(["1e-3", "3e-3"]):
        overrides = ["logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "model=cnn",
                     "budget=smoke", "trainer.max_steps=8", "trainer.val_check_interval=4", f"model.optimizer.lr={lr}"]
        run(compose(overrides, run_dir=root / str(job)))
        # What Hydra's multirun writes next to each job (compose() alone does not).
        (root / str(job) / ".hydra").mkdir()
        (root / str(job) / ".hydra" / "overrides.yaml").write_text(f"- model=cnn\n- model.optimizer.lr={lr}\n- hydra.verbose=false\n")
    return root


def test_one_real_run_curves_and_cost(multirun, capsys):
    run = load_run(multirun / "0")
    logged = pd.read_csv(multirun / "0" / "metrics.csv")

    fig = curves_figure(run)
    by_label = {line.get_label(): line for line in lines(fig, "loss")}
    assert set(by_label) == {"train/loss", "val/loss"}
    np.testing.assert_allclose(by_label["train/loss"].get_ydata(), logged["train/loss"].dropna())
    np.testing.assert_allclose(by_label["val/loss"].get_ydata(), logged["val/loss"].dropna())
    (acc,) = lines(fig, "val/acc", x="seconds")
    assert len(acc.get_xdata()) == 2 and np.all(np.diff(acc.get_xdata()) > 0)  # two validations, later in time
    (throughput,) = lines(system_figure(run), "train/samples_per_sec", x="seconds")
    np.testing.assert_allclose(throughput.get_ydata(), logged["train/samples_per_sec"].dropna())

    written = main([str(multirun / "0")])
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    assert {p.name for p in written} == {"curves.png", "system.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_multirun_comparison_from_the_command_line(multirun):
    result = subprocess.run([sys.executable, "-m", "dtrain.report", str(multirun)], env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(multirun / "plots" / "compare.png")]

    fig = comparison_figure(load_runs([multirun]))
    loss_lines = lines(fig, "train/loss")
    # Each job named by its folder and what sets it apart (model=cnn is every job's, so left out).
    assert [line.get_label() for line in loss_lines] == ["0: model.optimizer.lr=1e-3", "1: model.optimizer.lr=3e-3"]
    for line in loss_lines:
        logged = pd.read_csv(multirun / line.get_label().split(":")[0] / "metrics.csv")
        np.testing.assert_allclose(line.get_ydata(), logged["train/loss"].dropna())
    assert not np.allclose(loss_lines[0].get_ydata(), loss_lines[1].get_ydata())  # two learning rates


def test_a_folder_without_runs_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dtrain.report", str(tmp_path)], env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"dtrain: error: {tmp_path}: holds no run (no metrics.csv in it or its trials/job folders)"]
