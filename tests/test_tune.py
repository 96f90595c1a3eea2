"""Ray Tune sweeps on a real two-node Ray cluster (one per module): placement, early stopping,
multi-worker trials, retries, a killed driver, PBT and the best trial's reproduction."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, child_env
from tests.ray_cluster import ray_env, two_node_cluster
from tests.ray_probes import load_weights, weights_fingerprint

TINY = ["sweep=mlp_smoke", "logger=[csv]", "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "sweep.verbose=0"]


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster(head_cpus=1, worker_cpus=1) as address:
        yield address


def tune_cli(*args: str, cwd: Path, address: str, timeout: float = 400, background: bool = False, python_flags=()):
    env = ray_env(DTRAIN_RUNS_DIR=str(cwd / "runs"), OMP_NUM_THREADS="1")
    command = [sys.executable, *python_flags, "-m", "dtrain.tune", *TINY, f"sweep.address={address}", *args]
    if background:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def sweep_dir_of(cwd: Path) -> Path:
    (found,) = list((cwd / "runs" / "sweeps").glob("*/*"))
    return found


def results(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_value(metrics_csv: Path, key: str) -> float:
    with open(metrics_csv) as f:
        values = [row[key] for row in csv.DictReader(f) if row.get(key)]
    return float(values[-1])


def test_trials_land_on_both_nodes_and_best_yaml_reproduces(cluster, tmp_path):
    out = tune_cli(
        "trainer.max_epochs=2", "sweep.scheduler.name=fifo", "sweep.search=grid", "sweep.metric=val/loss", "sweep.mode=min",
        "sweep.max_concurrent_trials=2", "space.model.optimizer.lr=grid(1e-3,3e-3,1e-2,3e-2)", cwd=tmp_path, address=cluster,
        python_flags=["-X", "importtime"],
    )
    # Only trials train: the driver never loads torch, Lightning or W&B, not even inside Tune's
    # fit (its TensorBoard logger imported torch there, 1.7 s before the first trial started).
    driver_imports = {line.rpartition("|")[2].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert driver_imports and not driver_imports & {"torch", "lightning", "wandb"}
    sweep = sweep_dir_of(tmp_path)
    rows = results(sweep)
    assert len(rows) == 4 and all(row["status"] == "done" for row in rows)
    nodes = {line["node_id"] for row in rows for line in jsonl(sweep / "trials" / row["trial"] / "ray_nodes.jsonl")}
    assert len(nodes) == 2, nodes  # the head and the worker both ran trials
    for row in rows:  # every trial is a normal run directory
        trial = sweep / "trials" / row["trial"]
        assert (trial / "config.yaml").is_file() and (trial / "checkpoints" / "last.ckpt").is_file()
        assert len(list((trial / "checkpoints" / "reports").iterdir())) <= 2  # sweep.keep_checkpoints

    best = min(rows, key=lambda row: float(row["val/loss"]))
    assert (sweep / "experiment" / "best.yaml").is_file()
    env = child_env(DTRAIN_RUNS_DIR=str(tmp_path / "again"), OMP_NUM_THREADS="1")
    again = subprocess.run(
        [sys.executable, "-m", "dtrain", f"hydra.searchpath=[file://{sweep}]", "experiment=best", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    (rerun,) = list((tmp_path / "again").glob("*/*/metrics.csv"))
    assert last_value(rerun, "val/loss") == pytest.approx(float(best["val/loss"]), abs=1e-4)


@pytest.mark.slow
def test_asha_matches_fifo_with_less_compute(cluster, tmp_path):
    # a shuffled order, as a random search would propose (ascending rates would let every trial pass its rung)
    grid = "space.model.optimizer.lr=grid(1e-2,3e-5,3e-3,1e-4,3e-2,3e-4,1e-3,6e-5)"
    common = ["trainer.max_epochs=9", "sweep.search=grid", "sweep.metric=val/loss", "sweep.mode=min", "sweep.max_concurrent_trials=2", grid]
    summaries = {}
    for scheduler in ("fifo", "asha"):
        cwd = tmp_path / scheduler
        cwd.mkdir()
        tune_cli(*common, f"sweep.scheduler.name={scheduler}", "sweep.scheduler.grace_period=1", "sweep.scheduler.reduction_factor=3", cwd=cwd, address=cluster)
        rows = results(sweep_dir_of(cwd))
        assert len(rows) == 8
        summaries[scheduler] = {"epochs": sum(int(r["epochs"]) for r in rows), "best": min(float(r["val/loss"]) for r in rows)}
    print("ASHA vs FIFO:", json.dumps(summaries))
    assert summaries["fifo"]["epochs"] == 72
    assert summaries["asha"]["epochs"] <= 0.6 * summaries["fifo"]["epochs"]
    assert summaries["asha"]["best"] <= summaries["fifo"]["best"] + 0.02


@pytest.mark.slow
def test_two_worker_trials_train_data_parallel(cluster, tmp_path):
    tune_cli(
        "trainer.max_epochs=2", "sweep.num_samples=1", "sweep.resources.workers=2", "sweep.resources.cpus_per_worker=0.5",
        "space.model.optimizer.lr=choice(1e-3)", "+callbacks.probe._target_=tests.probes.RankProbe", cwd=tmp_path, address=cluster,
    )
    sweep = sweep_dir_of(tmp_path)
    (row,) = results(sweep)
    assert row["status"] == "done" and int(row["epochs"]) == 2
    probe = sweep / "trials" / row["trial"] / "probe"
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(rank["world_size"] == 2 for rank in ranks)
    assert ranks[0]["batches"] and not set(ranks[0]["batches"]) & set(ranks[1]["batches"])  # different batches
    weights = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])  # one model


def test_crashed_trial_is_retried_from_its_checkpoint_bitwise(cluster, tmp_path):
    tune_cli(
        "trainer.max_epochs=3", "sweep.num_samples=2", "sweep.max_concurrent_trials=2", "space.model.optimizer.lr=choice(2e-3)",
        "+callbacks.attempts._target_=tests.ray_probes.Attempts", "+callbacks.crash._target_=tests.ray_probes.CrashOnce",
        f"+callbacks.crash.marker_dir={tmp_path}", "+callbacks.crash.step=8", cwd=tmp_path, address=cluster,
    )
    sweep = sweep_dir_of(tmp_path)
    rows = results(sweep)
    assert [row["status"] for row in rows] == ["done", "done"]
    crashed = Path((tmp_path / "crashed").read_text())
    (clean,) = [sweep / "trials" / row["trial"] for row in rows if sweep / "trials" / row["trial"] != crashed]
    starts = [a["step"] for a in jsonl(crashed / "attempts.jsonl")]
    assert starts[0] == 0 and len(starts) == 2 and 0 < starts[1] <= 8  # resumed, not restarted
    assert [a["step"] for a in jsonl(clean / "attempts.jsonl")] == [0]
    a, b = load_weights(crashed / "checkpoints" / "last.ckpt"), load_weights(clean / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[name], b[name]) for name in a)

    # a trial is a normal run: `python -m dtrain resume=<trial dir>` continues it by hand, without Ray
    more = subprocess.run(
        [sys.executable, "-m", "dtrain", f"resume={clean}", "trainer.max_epochs=4"],
        cwd=tmp_path, env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    with open(clean / "metrics.csv") as f:
        assert max(int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/loss")) == 3  # a 4th epoch (0-based 3)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _reports(trial: Path) -> int:
    text = _text(trial / "tune_report.json")
    return json.loads(text)["reports"] if text else 0


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_killed_driver_is_resumed_and_optuna_continues(cluster, tmp_path):
    driver = tune_cli(
        "trainer.max_epochs=4", "sweep.search=optuna", "sweep.seed=7", "sweep.num_samples=3", "sweep.max_concurrent_trials=1",
        "space.model.optimizer.lr=loguniform(1e-4,3e-2)", "+callbacks.attempts._target_=tests.ray_probes.Attempts",
        "+callbacks.slow._target_=tests.ray_probes.SlowEpochs", "+callbacks.slow.seconds=0.5", cwd=tmp_path, address=cluster, background=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill once one trial has finished and the next has reported twice
            trials = list((tmp_path / "runs" / "sweeps").glob("*/*/trials/*"))
            finished = [t for t in trials if "test/loss" in _text(t / "metrics.csv")]
            running = [t for t in trials if t not in finished and _reports(t) >= 2]
            if finished and running:
                break
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    sweep = sweep_dir_of(tmp_path)
    before = {t.name: _snapshot(t) for t in finished}

    out = subprocess.run(
        [sys.executable, "-m", "dtrain.tune", f"sweep.resume={sweep}", f"sweep.address={cluster}"],
        cwd=tmp_path, env=ray_env(DTRAIN_RUNS_DIR=str(tmp_path / "runs"), OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=400,
    )
    assert out.returncode == 0, out.stderr[-5000:]
    rows = results(sweep)
    assert len(rows) == 3 and all(row["status"] == "done" for row in rows), rows
    assert {name: _snapshot(sweep / "trials" / name) for name in before} == before  # finished trials are not re-run
    resumed_starts = [a["step"] for a in jsonl(running[0] / "attempts.jsonl")]
    assert resumed_starts[0] == 0 and resumed_starts[-1] > 0  # continued from its checkpoint

    from ray.tune.search.optuna import OptunaSearch
    import optuna

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(sweep))
    done = [t for t in searcher._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # the restored study holds the trials from before the kill as well


def test_pbt_exploit_takes_weights_but_trains_with_its_own_values(cluster, tmp_path):
    # Asynchronous PBT compares a trial at its perturbation point with the others' latest scores,
    # so an exploit needs a clearly worse trial while a better one is still running:
    # seed 10 draws learning rates 2.3e-2 and 3.3e-4, and the trials start training together
    # (CI once had no exploit when the draws were close or one trial started late).
    tune_cli(
        "trainer.max_epochs=8", "sweep.scheduler.name=pbt", "sweep.scheduler.perturbation_interval=2", "sweep.scheduler.quantile_fraction=0.5",
        "sweep.seed=10", "+callbacks.together._target_=tests.ray_probes.StartTogether", f"+callbacks.together.marker_dir={tmp_path / 'started'}",
        "+callbacks.slow._target_=tests.ray_probes.SlowEpochs", "+callbacks.slow.seconds=1.0",
        "sweep.num_samples=2", "sweep.max_concurrent_trials=2", "sweep.keep_checkpoints=10", "sweep.metric=val/loss", "sweep.mode=min",
        "space.model.optimizer.lr=loguniform(1e-4,3e-2)", "+callbacks.attempts._target_=tests.ray_probes.Attempts",
        cwd=tmp_path, address=cluster,
    )
    sweep = sweep_dir_of(tmp_path)
    starts = [jsonl(trial / "attempts.jsonl") for trial in (sweep / "trials").iterdir()]
    first_lrs = sorted(attempts[0]["lr"] for attempts in starts if attempts)
    assert first_lrs == pytest.approx([3.27e-4, 2.33e-2], rel=0.01)  # the seeded draws
    exploits = [(trial, line) for trial in (sweep / "trials").iterdir() for line in jsonl(trial / "pbt_schedule.jsonl")]
    assert exploits, "no exploit happened"
    trial, exploit = exploits[0]
    donor = torch.load(exploit["donor_checkpoint"], map_location="cpu", weights_only=False)
    donor_lr = donor["optimizer_states"][0]["param_groups"][0]["lr"]
    own_lr = float(next(o for o in exploit["overrides"] if o.startswith("model.optimizer.lr=")).partition("=")[2])
    attempt = next(a for a in jsonl(trial / "attempts.jsonl") if a["step"] == donor["global_step"])
    assert attempt["weights"] == weights_fingerprint(donor["state_dict"])  # the donor's weights
    assert attempt["lr"] == pytest.approx(own_lr) and own_lr != pytest.approx(donor_lr)  # its own mutated rate
    from omegaconf import OmegaConf

    last = jsonl(trial / "pbt_schedule.jsonl")[-1]["overrides"]
    last_lr = float(next(o for o in last if o.startswith("model.optimizer.lr=")).partition("=")[2])
    assert OmegaConf.load(trial / "config.yaml").model.optimizer.lr == pytest.approx(last_lr)  # rewritten at the exploit
