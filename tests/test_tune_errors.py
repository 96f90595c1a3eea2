"""A sweep's bad input ends before any trial starts, in one line with exit status 2; the
cluster checks (capacity, shared storage) run against a real two-node Ray cluster whose worker
does not see the sweep folder (its own mount namespace)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ray_cluster import ray_env, two_node_cluster

BASE = ["sweep=mlp_smoke", "logger=[csv]"]
LR = "space.model.optimizer.lr=loguniform(1e-4,1e-2)"


def tune_main(monkeypatch, capsys, tmp_path, *args: str) -> tuple[int, str]:
    """`python -m dtrain.tune <args>` in this process: its exit status and its stderr."""
    from dtrain.tune.__main__ import main

    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["dtrain.tune", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, key, words",
    [
        ([*BASE, "space.model.optimizer.lrr=loguniform(1e-4,1e-2)"], "space.model.optimizer.lrr", "did you mean model.optimizer.lr"),
        ([*BASE, "space.model.optimizer.lr=logunifrom(1e-4,1e-2)"], "space.model.optimizer.lr", "did you mean loguniform"),
        ([*BASE, "space.model.optimizer.lr=loguniform(0,1)"], "space.model.optimizer.lr", "must be positive"),
        ([*BASE, "space.model.net.hidden=randint(64,32)"], "space.model.net.hidden", "lower bound"),
        ([*BASE, LR, "sweep.search=hyperopt"], "sweep.search", "choose one of random, grid, optuna"),
        ([*BASE, LR, "sweep.scheduler.name=hyperband"], "sweep.scheduler.name", "choose one of fifo, asha, pbt"),
        ([*BASE, LR, "model=mlp_regression", "sweep.metric=val/acc"], "sweep.metric", "never logs 'val/acc'"),
        ([*BASE, LR, "trainer.devices=2"], "trainer.devices", "sweep.resources.workers=2"),
        ([*BASE, LR, "sweep.resources.workers=2", "trainer=fsdp", "trainer.devices=1"], "trainer.strategy", "GPUs only"),
        ([*BASE, "space.model/net=choice(mlp,lstmm)"], "space.model/net", "no option 'lstmm'"),
        ([*BASE, LR, "sweep.seed=-1"], "sweep.seed", "non-negative integer"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(monkeypatch, capsys, tmp_path, args, key, words):
    code, err = tune_main(monkeypatch, capsys, tmp_path, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"dtrain: error: {key}: ") and words in err, err
    assert not (tmp_path / "runs").exists()  # no sweep folder left behind


def test_resume_of_a_folder_without_a_sweep(monkeypatch, capsys, tmp_path):
    code, err = tune_main(monkeypatch, capsys, tmp_path, f"sweep.resume={tmp_path}")
    assert code == 2 and err.startswith("dtrain: error: sweep.resume: ") and "holds no dtrain sweep" in err


def test_unreachable_address_fails_within_seconds(monkeypatch, capsys, tmp_path):
    import time

    start = time.monotonic()
    code, err = tune_main(monkeypatch, capsys, tmp_path, *BASE, LR, f"sweep.address=127.0.0.1:{_free_port()}")
    assert code == 2 and err.startswith("dtrain: error: sweep.address: cannot reach a Ray head")
    assert time.monotonic() - start < 30  # not Ray's minutes of retries


def test_command_line_exits_2_with_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dtrain.tune", *BASE, "space.model.optimizer.lr=loguniform(0,1)"],
        cwd=tmp_path, env=ray_env(DTRAIN_RUNS_DIR=str(tmp_path / "runs")), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "loguniform(0,1)" in out.stderr


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory):
    """Two nodes; the worker has a private empty tmpfs over `hidden`, so it cannot see sweeps put there."""
    hidden = tmp_path_factory.mktemp("hidden")
    wrap = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(hidden)]
    with two_node_cluster(head_cpus=1, worker_cpus=1, worker_prefix=wrap) as address:
        yield address, hidden


def test_workers_beyond_the_cluster_are_refused(blind_cluster, monkeypatch, capsys, tmp_path):
    address, _ = blind_cluster
    code, err = tune_main(monkeypatch, capsys, tmp_path, *BASE, LR, f"sweep.address={address}", "sweep.resources.workers=5")
    assert code == 2 and err.startswith("dtrain: error: sweep.resources.workers: ") and "the whole cluster has 2" in err, err


def test_storage_not_seen_by_every_node_is_refused(blind_cluster, monkeypatch, capsys, tmp_path):
    address, hidden = blind_cluster
    code, err = tune_main(monkeypatch, capsys, tmp_path, *BASE, LR, f"sweep.address={address}", f"sweep.storage_path={hidden}/sweeps")
    assert code == 2 and err.startswith("dtrain: error: sweep.storage_path: ") and "not visible from node" in err, err
    assert not list(Path(hidden, "sweeps").rglob("*.json"))  # no trial ran


def test_experiment_keys_win_over_train_yaml(tmp_path):
    """An experiment's `seed` is not silently replaced by train.yaml's (point 7's defaults order)."""
    from dtrain.config.compose import compose

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "seeded.yaml").write_text("# @package _global_\nseed: 4321\n")
    cfg = compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=seeded"], run_dir=tmp_path / "run")
    assert cfg.seed == 4321


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_cluster_yamls_hold_what_rays_schema_requires(name):
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "launchers" / "ray" / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's own schema, as `ray up` checks it
    broken = {k: v for k, v in config.items() if k != "provider"}
    with pytest.raises((jsonschema.ValidationError, KeyError, ValueError)):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", ["cnn_asha", "transformer_optuna", "lstm_pbt"])
def test_shipped_sweeps_pass_the_checks(name, tmp_path, monkeypatch):
    from dtrain.tune.plan import make_plan
    from dtrain.tune.preflight import check_inputs
    from dtrain.tune.tuner import param_space

    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    plan = make_plan([f"sweep={name}"])
    check_inputs(plan)
    assert len(param_space(plan)) >= 2


def test_the_sweep_driver_never_imports_torch():
    """Only trials train: importing torch and Lightning in the driver cost 7 s on this machine
    before the first trial could start (benchmarks/sweep_overhead.py)."""
    code = (
        "import sys, dtrain.tune.__main__, dtrain.tune.plan, dtrain.tune.preflight, dtrain.tune.results, "
        "dtrain.tune.trial, dtrain.tune.tuner, ray.tune.tuner; "
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'lightning'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_trial_row_counts_the_trials_own_reports(tmp_path):
    """After a killed driver, Tune's training_iteration counts on from the sweep state it last
    saved; the results table takes the count the trial's checkpoint carried on."""
    from types import SimpleNamespace

    from dtrain.tune.plan import make_plan
    from dtrain.tune.results import trial_rows

    plan = make_plan([*BASE, LR, "sweep.scheduler.max_t=4"])
    lagging = SimpleNamespace(metrics={"trial_id": "a", "reports": 4, "training_iteration": 3, "val/loss": 0.1}, config={}, error=None, path="ray_a")
    stopped = SimpleNamespace(metrics={"trial_id": "b", "reports": 2, "training_iteration": 2, "val/loss": 0.3}, config={}, error=None, path="ray_b")
    rows = trial_rows(plan, [lagging, stopped])
    assert [(row["epochs"], row["status"]) for row in rows] == [(4, "done"), (2, "stopped early")]


def test_a_seeded_sweep_proposes_the_same_values_again(monkeypatch, tmp_path):
    """sweep.seed seeds Tune's random draws (and Optuna's sampler): a sweep can be repeated as it ran."""
    from ray import tune

    from dtrain.tune.plan import make_plan
    from dtrain.tune.tuner import _searcher, param_space

    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    tune.register_trainable("draws_only", lambda config: None)

    def draws(seed: int) -> list[dict]:
        plan = make_plan([*BASE, LR, "space.data.batch_size=choice(16,32,64)", f"sweep.seed={seed}"])
        searcher = _searcher(plan)
        searcher.add_configurations({"draws": {"run": "draws_only", "config": param_space(plan), "num_samples": 2}})
        return [searcher.next_trial().config for _ in range(2)]  # mlp_smoke runs 2 at once

    assert draws(10) == draws(10)
    assert draws(10) != draws(11)
