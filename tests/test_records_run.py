"""A real dtrain run records its cost and convergence in summary.json, metrics.csv, env.json and
the offline W&B run, and nothing secret anywhere in its directory."""

import csv
import json
import subprocess

import pytest

from dtrain.wandb_offline import read_config, read_history, read_run, read_summary, wait_closed
from dtrain.wandb_offline import run_files as all_run_files

PER_STEP = ("train/samples_per_sec", "train/step_time_s", "train/data_wait_frac", "train/tflops", "train/mfu", "train/lr", "train/grad_norm", "memory/peak_gib")
API_KEY = "k" * 40
TOKEN = "ghp_notarealtoken0123456789"


def run_files(run_dir) -> list:
    """The run's offline W&B files, once W&B has written them out."""
    files = all_run_files(run_dir)
    assert all(wait_closed(path) for path in files)
    return files


def rows(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


@pytest.fixture
def user_repo(tmp_path, monkeypatch):
    """The user's working tree: a git repository with a remote cloned with a token, a tracked
    file changed since the commit and an untracked file."""
    repo = tmp_path / "project"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    (repo / "train_notes.txt").write_text("lr 1e-3\n")
    git("add", "train_notes.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "start")
    git("remote", "add", "origin", f"https://someone:{TOKEN}@example.invalid/project.git")
    (repo / "train_notes.txt").write_text("lr 3e-3\n")
    (repo / "scratch.txt").write_text("untracked scribbles\n")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    return repo


def test_every_run_records_cost_convergence_and_its_environment(train, user_repo):
    metrics, run_dir = train("model=mlp", "trainer.max_epochs=3", "trainer.log_every_n_steps=2", "logger=[csv,wandb]")
    summary = json.loads((run_dir / "summary.json").read_text())

    # Cost: parameters, FLOPs, the measured CPU peak, memory, throughput and MFU.
    assert isinstance(summary["params"], int) and summary["params"] > 1000
    assert summary["flops_per_step"] > 0 and summary["flops_per_sample"] > 0
    assert summary["peak_flops"] > 0 and summary["peak_flops_source"].startswith("measured cpu matmul float32")
    assert summary["memory/peak_gib"] > 0.1
    assert summary["train/samples_per_sec"] > 0 and 0 < summary["train/mfu"] < 1
    table = rows(run_dir)
    for key in PER_STEP:
        assert any(row.get(key) for row in table), key

    # Convergence: the best validation loss and accuracy, where and when, and 95% of the way.
    val = [row for row in table if row.get("val/loss")]
    assert len(val) == 3
    best = min(val, key=lambda row: float(row["val/loss"]))
    assert summary["summary/best_val_loss"] == pytest.approx(float(best["val/loss"]))
    assert summary["summary/best_step"] == int(best["step"])
    assert summary["summary/best_val_acc"] == pytest.approx(max(float(row["val/acc"]) for row in val))
    assert int(val[0]["step"]) <= summary["summary/steps_to_95"] <= summary["summary/best_step"]
    assert 0 < summary["summary/seconds_to_95"] <= summary["summary/best_seconds"]

    # The same in the offline W&B run: per-step metrics, the summary, the environment record.
    (wandb_file,) = run_files(run_dir)
    env = json.loads((run_dir / "env.json").read_text())
    config = read_config(wandb_file)
    assert read_run(wandb_file)["id"] == config["run_id"] == wandb_file.stem.removeprefix("run-")
    logged = set().union(*read_history(wandb_file))
    assert set(PER_STEP) <= logged
    wandb_summary = read_summary(wandb_file)
    for key in ("params", "flops_per_step", "peak_flops", "memory/peak_gib", "train/samples_per_sec", "train/mfu", "summary/best_val_loss", "summary/steps_to_95"):
        assert wandb_summary[key] == pytest.approx(summary[key]), key
    assert config["env"] == env

    # The reproducibility record: the user's commit and tracked changes, packages, layout.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=user_repo, capture_output=True, text=True).stdout.strip()
    assert env["git"]["commit"] == head and env["git"]["dirty"]
    assert "+lr 3e-3" in env["git"]["diff"] and "untracked scribbles" not in json.dumps(env)
    assert env["git"]["remote"] == "https://example.invalid/project.git"
    assert env["packages"]["torch"].startswith(env["versions"]["torch"].split("+")[0])
    assert {"lightning", "wandb", "hydra-core"} <= set(env["packages"])
    assert env["world_size"] == 1 and env["data_parallel_size"] == 1 and env["tensor_parallel_size"] == 1 and env["pipeline_parallel_size"] == 1
    assert env["devices"]["cpu"]["memory_gib"] > 0

    # Nothing secret anywhere in the run directory, W&B's own files included.
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert API_KEY.encode() not in data and TOKEN.encode() not in data, f"secret written to {path}"


def test_gan_throughput_counts_batches_not_optimizer_steps(train):
    # Two optimizer steps per batch: Lightning stops at max_steps=8 optimizer steps, 4 batches.
    _, run_dir = train(
        "model=dcgan", "trainer.max_steps=8", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", "test=false", "data.batch_size=32",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train/batches"] == 4 and summary["train/samples"] == 4 * 32
    timed = [row for row in rows(run_dir) if row.get("train/samples_per_sec")]
    assert len(timed) == 3  # every batch after the first
    for row in timed:  # samples per second x seconds per batch = one batch, not two
        assert float(row["train/samples_per_sec"]) * float(row["train/step_time_s"]) == pytest.approx(32, rel=1e-3)
    assert summary["flops_per_sample"] > 0 and summary["train/mfu"] > 0
    assert any(row.get("train/loss") for row in rows(run_dir))  # the generator's loss, logged per batch


def test_a_resumed_run_continues_its_wandb_run_and_its_records(train):
    from omegaconf import open_dict

    from dtrain.run_dir import load_config
    from dtrain.train import run

    # A VAE without the digits scorer: a validation (and a W&B sample grid) every 3 batches.
    overrides = ("model=vae", "model.cache_dir=null", "budget=smoke", "trainer.val_check_interval=3", "logger=[csv,wandb]")
    _, run_dir = train(*overrides)
    cfg = load_config(run_dir)  # what `python -m dtrain resume=<run dir> trainer.max_steps=6 trainer.max_epochs=2` runs
    with open_dict(cfg):
        cfg.resume, cfg.trainer.max_steps, cfg.trainer.max_epochs = str(run_dir), 6, 2
    run(cfg)

    first, second = run_files(run_dir)  # offline W&B writes a second folder with the same run id
    assert read_run(first)["id"] == read_run(second)["id"] == cfg.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train/batches"] == 6 and summary["summary/validations"] == 2  # both processes' batches and validations
    assert read_summary(second)["summary/validations"] == 2
    # Sample grids are W&B images, logged by both processes.
    for path, epoch in ((first, "epoch000"), (second, "epoch001")):
        grids = [row for row in read_history(path) if row.get("samples/samples/_type") == "images/separated"]
        assert any(row["samples/samples/captions"] == [f"samples-{epoch}"] for row in grids), path


def test_the_runs_of_a_multirun_share_a_wandb_group(tmp_path):
    from tests.conftest import dtrain_cli

    result = dtrain_cli("-m", "model=mlp", "budget=smoke", "seed=1,2", "logger=[csv,wandb]", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted((tmp_path / "runs" / "multirun").glob("*/*/*/wandb/offline-run-*/run-*.wandb"))
    assert all(wait_closed(path) for path in files)
    runs = [read_run(path) for path in files]
    assert len(runs) == 2 and runs[0]["id"] != runs[1]["id"]  # one W&B run per job, never merged
    sweep_dir = files[0].parents[3]
    assert runs[0]["group"] == runs[1]["group"] == str(sweep_dir.relative_to(tmp_path / "runs"))


def test_steps_a_resumed_run_trains_again_are_not_recorded_twice_in_wandb(train):
    """A run is resumed from a checkpoint older than what it logged (as a kill after a
    checkpoint leaves it): the resumed process trains steps 3 and 4 again (then 5 and 6), and
    W&B keeps each step's values once, across the run's two segments."""
    from omegaconf import open_dict

    from dtrain.run_dir import load_config
    from dtrain.train import run

    steps = ("+callbacks.every_step._target_=lightning.pytorch.callbacks.ModelCheckpoint", "+callbacks.every_step.dirpath=${paths.run_dir}/checkpoints",
             "+callbacks.every_step.every_n_train_steps=2", "+callbacks.every_step.save_top_k=-1", "+callbacks.every_step.filename='{step}'")
    _, run_dir = train("model=mlp", "budget=smoke", "trainer.max_steps=4", "trainer.log_every_n_steps=1", "logger=[csv,wandb]", *steps)
    for path in (run_dir / "checkpoints").iterdir():  # only step 2's is left
        if path.name != "step=2.ckpt":
            path.unlink()
    assert (run_dir / "checkpoints" / "step=2.ckpt").is_file()
    cfg = load_config(run_dir)
    with open_dict(cfg):  # `python -m dtrain resume=<run dir> trainer.max_steps=6`
        cfg.resume, cfg.trainer.max_steps = str(run_dir), 6
    run(cfg)

    def recorded(path) -> set:
        return {(row["trainer/global_step"], key) for row in read_history(path) if "trainer/global_step" in row
                for key in row if not key.startswith("_") and key != "trainer/global_step"}

    first, second = map(recorded, run_files(run_dir))
    assert {step for step, key in second if key == "train/loss"}, "the resumed run recorded nothing"
    assert not first & second, f"recorded by both segments: {sorted(first & second)[:6]}"
    assert len({step for step, key in first | second if key == "train/loss"}) == 6  # every step
