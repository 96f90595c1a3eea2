"""Slurm for real: a two-node cluster on this machine runs sbatch jobs by hand and from dtrain,
multiruns, a preempted job that requeues and resumes to the same weights, and a Ray cluster;
bad input ends in one line with nothing submitted."""

import csv
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, child_env
from tests.slurm_helpers import cluster_or_skip, start_cluster, stop_cluster

# A small tabular MLP: a few seconds of training once Python has started.
RUN = ["model=mlp", "logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# What the by-hand template asks for and this cluster lacks (its nodes have 8 CPUs, no GPUs).
NO_GPUS = ["--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster_or_skip()
    folder = Path(tempfile.mkdtemp(prefix="dtrain-slurm-"))  # short: munge's socket path has a length limit
    try:
        yield start_cluster(folder)
    finally:
        stop_cluster(folder)
        shutil.rmtree(folder, ignore_errors=True)


def env_for(cluster, **extra) -> dict:
    """The environment a job inherits (sbatch exports it): this venv's python, W&B offline."""
    return child_env(**cluster.env, DTRAIN_PYTHON=sys.executable, WANDB_MODE="offline", **extra)


def env_in(cluster, cwd: Path, **extra) -> dict:
    return env_for(cluster, DTRAIN_RUNS_DIR=str(cwd / "runs"), **extra)


def dtrain(cluster, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "dtrain", *args], cwd=cwd, env=env or env_in(cluster, cwd), capture_output=True, text=True, timeout=300)


def submitted_job(stdout: str) -> str:
    return next(line.rsplit(" ", 1)[1] for line in stdout.splitlines() if line.startswith("dtrain: submitted Slurm job"))


def metric_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def run_dirs(runs: Path) -> list[Path]:
    """Every folder that Hydra or dtrain made into a run directory."""
    hydra = {path.parent for path in runs.rglob(".hydra")}
    return sorted(hydra | {path.parent for path in runs.rglob("config.yaml") if path.parent.name != ".hydra"})


@pytest.mark.slow
def test_train_sbatch_runs_two_ddp_ranks_under_srun(cluster, tmp_path):
    done = cluster.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", *NO_GPUS, str(REPO / "slurm/train.sbatch"),
                       *RUN, "trainer=ddp", "trainer.max_epochs=3", cwd=tmp_path, env=env_in(cluster, tmp_path))
    job_id = done.stdout.strip()
    job = cluster.wait(job_id)
    log = (tmp_path / f"slurm-{job_id}.out").read_text()
    assert job["JobState"] == "COMPLETED", log[-3000:]

    (run_dir,) = run_dirs(tmp_path / "runs")
    assert run_dir == tmp_path / "runs" / "slurm" / job_id
    record = json.loads((run_dir / "env.json").read_text())
    assert (record["world_size"], record["strategy"]) == (2, "DDPStrategy")
    # Lightning's own messages go to the run's log file (the console shows dtrain's), every rank's.
    assert "MEMBER: 2/2" in (run_dir / "run.log").read_text(), "Lightning took its two ranks from srun"
    test_acc = [float(row["test/acc"]) for row in metric_rows(run_dir) if row.get("test/acc")]
    assert test_acc and test_acc[-1] > 0.85, "the MLP learns the breast-cancer table in 3 epochs"


@pytest.mark.slow
def test_launcher_slurm_submits_a_two_node_job_and_a_dry_run_passes_test_only(cluster, tmp_path):
    # Two nodes of one CPU rank each (n1 and n2 are both this machine, on 127.0.0.1 and .2).
    submitted = dtrain(cluster, "launcher=slurm", "launcher.partition=debug", "launcher.nodes=2", "launcher.setup=[echo node-prepared]",
                       *RUN, "trainer=ddp", "trainer.max_epochs=2", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted_job(submitted.stdout)
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert f"run directory: {run_dir}" in submitted.stdout and f"log: {run_dir}/slurm-{job_id}.out" in submitted.stdout
    job = cluster.wait(job_id)
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert job["JobState"] == "COMPLETED", log[-3000:]
    assert log.startswith("node-prepared\n"), "launcher.setup runs before dtrain"
    assert run_dirs(tmp_path / "runs") == [run_dir], "the job trains in the directory it was submitted with"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and any(row.get("test/acc") for row in metric_rows(run_dir))
    record = json.loads((run_dir / "env.json").read_text())
    assert (record["num_nodes"], record["world_size"]) == (2, 2), "launcher.nodes flowed into trainer.num_nodes"

    dry = dtrain(cluster, "launcher=slurm", "launcher.partition=debug", "launcher.nodes=2", "launcher.tasks_per_node=2",
                 "launcher.dry_run=true", "+launcher.extra.mem=1G", *RUN, "trainer=ddp", cwd=tmp_path / "dry")
    assert dry.returncode == 0, dry.stderr[-2000:]
    (script,) = (tmp_path / "dry" / "runs").rglob("job.sbatch")
    text = script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --mem=1G", "#SBATCH --signal=USR1@120", "#SBATCH --requeue"):
        assert line in text
    assert "dtrain: submitted" not in dry.stdout
    checked = cluster.run("sbatch", "--test-only", str(script), check=False)
    assert checked.returncode == 0, checked.stderr
    assert "n[1-2]" in checked.stderr, checked.stderr


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_resumes_to_the_same_weights(cluster, tmp_path, fault_record):
    run = [*RUN, "logger=[csv,wandb]", "data.batch_size=16", "trainer.max_epochs=3", "seed=3"]
    # Sleeps from step 20 on until the job is requeued, so there is time to send the signal mid-epoch.
    slow = ["+callbacks.slow._target_=tests.slurm_helpers.SlowAfterStep", "+callbacks.slow.step=20", "+callbacks.slow.seconds=0.3"]
    submitted = dtrain(cluster, "launcher=slurm", "launcher.partition=debug", *run, *slow, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted_job(submitted.stdout)
    (run_dir,) = run_dirs(tmp_path / "runs")
    # The uninterrupted run, here, meanwhile (a callback that only sleeps changes no weight).
    reference = subprocess.Popen([sys.executable, "-m", "dtrain", *run], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=child_env(DTRAIN_RUN_DIR=str(tmp_path / "reference"), WANDB_MODE="offline"))

    deadline = time.monotonic() + 180
    while not (run_dir / "reached").exists():
        assert cluster.job(job_id)["JobState"] in ("PENDING", "RUNNING"), (run_dir / f"slurm-{job_id}.out").read_text()[-3000:]
        assert time.monotonic() < deadline, "the job never reached step 20"
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", job_id)
    signalled = datetime.datetime.now()
    job = cluster.wait(job_id)
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert (job["JobState"], job["Restarts"]) == ("COMPLETED", "1"), log[-3000:]
    run_log = (run_dir / "run.log").read_text()  # Lightning's messages, with their times
    restored = next(line for line in run_log.splitlines() if line.startswith("[") and "Restoring states" in line and "requeue.ckpt" in line)
    training_again = datetime.datetime.strptime(restored[1:24], "%Y-%m-%d %H:%M:%S,%f")
    running_again = datetime.datetime.fromisoformat(job["StartTime"])
    print(f"requeue latency: job running again {(running_again - signalled).total_seconds():.1f} s after the signal, "
          f"training from the checkpoint {(training_again - signalled).total_seconds():.1f} s after")
    assert "checkpointed to" in log and "requeue.ckpt" in log
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    expected, actual = final_weights(tmp_path / "reference"), final_weights(run_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after the requeue"
    restarts = {row["slurm/restart_count"] for row in metric_rows(run_dir) if row.get("slurm/restart_count")}
    assert restarts == {"0", "1"}, "SLURM_RESTART_COUNT is in the run's metrics"
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and len({path.name.rsplit("-", 1)[1] for path in wandb_runs}) == 1, "one W&B run id across the requeue"
    assert run_dirs(tmp_path / "runs") == [run_dir], "no second run directory"
    fault_record("slurm_preempted", "cpu", survived=True, nothing_lost=True, message=True)


@pytest.mark.slow
def test_a_cancelled_job_and_one_past_max_requeues_checkpoint_but_stay_down(cluster, tmp_path):
    slow = ["+callbacks.slow._target_=tests.slurm_helpers.SlowAfterStep", "+callbacks.slow.step=5", "+callbacks.slow.seconds=0.5"]
    jobs = {}
    for name, extra in (("cancelled", []), ("limited", ["launcher.max_requeues=0"])):
        submitted = dtrain(cluster, "launcher=slurm", "launcher.partition=debug", *RUN, "data.batch_size=16", "trainer.max_epochs=3", *slow, *extra, cwd=tmp_path / name)
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        (run_dir,) = run_dirs(tmp_path / name / "runs")
        jobs[name] = (submitted_job(submitted.stdout), run_dir)
    for name, (job_id, run_dir) in jobs.items():
        deadline = time.monotonic() + 180
        while not (run_dir / "reached").exists():
            assert cluster.job(job_id)["JobState"] in ("PENDING", "RUNNING"), (run_dir / f"slurm-{job_id}.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never reached step 5"
            time.sleep(0.2)
        cluster.run("scancel", job_id) if name == "cancelled" else cluster.run("scancel", "--signal=USR1", job_id)
    for name, (job_id, run_dir) in jobs.items():
        job = cluster.wait(job_id)
        log = (run_dir / f"slurm-{job_id}.out").read_text()
        assert job["Restarts"] == "0" and job["JobState"] == ("CANCELLED" if name == "cancelled" else "FAILED"), log[-3000:]
        assert "not requeued" in log and (run_dir / "checkpoints" / "requeue.ckpt").is_file(), log[-3000:]


@pytest.mark.slow
def test_multirun_submits_one_job_per_combination_each_in_its_own_run_dir(cluster, tmp_path):
    submitted = dtrain(cluster, "-m", "launcher=slurm", "launcher.partition=debug", *RUN, "trainer.max_epochs=1", "model.optimizer.lr=1e-3,3e-2", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_ids = [line.rsplit(" ", 1)[1] for line in submitted.stdout.splitlines() if line.startswith("dtrain: submitted Slurm job")]
    assert len(job_ids) == 2
    for job_id in job_ids:
        assert cluster.wait(job_id)["JobState"] == "COMPLETED"
    first, second = run_dirs(tmp_path / "runs")
    assert first.parent == second.parent and {first.name, second.name} == {"0", "1"}
    from omegaconf import OmegaConf

    assert {OmegaConf.load(d / "config.yaml").model.optimizer.lr for d in (first, second)} == {1e-3, 3e-2}
    a, b = final_weights(first), final_weights(second)
    assert any(not torch.equal(a[name], b[name]) for name in a), "each job trained its own combination from scratch"
    for run_dir in (first, second):
        log = (run_dir / "run.log").read_text()
        assert "Trainer.fit` stopped" in log
        assert "Restoring states" not in log.split("Trainer.fit` stopped")[0], "no job started from another's checkpoint"


@pytest.mark.slow
def test_ray_cluster_sbatch_runs_a_command_against_its_ray_cluster(cluster, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import ray\n"
        "ray.init()\n"  # RAY_ADDRESS is set by the script
        "print('ray nodes:', len([n for n in ray.nodes() if n['Alive']]), 'answer:', ray.get(ray.remote(lambda: 42).remote()))\n"
    )
    temp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # Ray's socket paths must stay short
    env = env_for(cluster, RAY_AUTH_MODE="disabled", DTRAIN_RAY=str(Path(sys.executable).parent / "ray"), DTRAIN_RAY_TEMP_DIR=str(temp),
                  DTRAIN_RAY_START_ARGS="--object-store-memory=100000000", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    try:
        done = cluster.run("sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", *NO_GPUS[:2], str(REPO / "slurm/ray_cluster.sbatch"),
                           sys.executable, str(probe), cwd=tmp_path, env=env)
        job_id = done.stdout.strip()
        job = cluster.wait(job_id, timeout=180)
        log = (tmp_path / f"slurm-{job_id}.out").read_text()
        assert job["JobState"] == "COMPLETED", log[-3000:]
        assert "ray nodes: 1 answer: 42" in log
        ray_left = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        assert not ray_left, "Ray was stopped when the command ended"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "key", "words"),
    [
        (["launcher.partition=nope"], "launcher", "invalid partition specified: nope"),
        (["launcher.gpus_per_node=2"], "launcher.gpus_per_node", "trainer.accelerator=cpu"),
        (["trainer=ddp", "launcher.tasks_per_node=2", "trainer.devices=3"], "trainer.devices", "launcher.tasks_per_node is 2"),
    ],
    ids=["unknown-partition", "gpus-with-cpu-trainer", "devices-disagree"],
)
def test_bad_slurm_input_ends_in_one_line_and_submits_nothing(cluster, tmp_path, args, key, words):
    queued_before = cluster.run("squeue", "-h", "-o", "%i").stdout
    done = dtrain(cluster, "launcher=slurm", "launcher.partition=debug", *RUN, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dtrain: error: {key}: ") and words in lines[0], done.stderr
    assert not (tmp_path / "runs").exists(), "no run directory"
    assert cluster.run("squeue", "-h", "-o", "%i").stdout == queued_before, "nothing submitted"


def test_launcher_slurm_without_sbatch_suggests_launcher_local(tmp_path):
    env = child_env(PATH="/nonexistent", DTRAIN_RUNS_DIR=str(tmp_path / "runs"))
    done = subprocess.run([sys.executable, "-m", "dtrain", "launcher=slurm", *RUN], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dtrain: error: launcher: ") and "sbatch" in lines[0] and "launcher=local" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_installed_package_writes_the_templates(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dtrain.launch.slurm", str(tmp_path / "mine")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("train.sbatch", "train_multinode.sbatch", "ray_cluster.sbatch"):
        assert (tmp_path / "mine" / name).read_text() == (REPO / "slurm" / name).read_text()
