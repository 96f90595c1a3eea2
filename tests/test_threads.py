"""runtime.threads: each process's share of the cores it may use, decided once, kept by a resumed
run, given to every rank, with OpenMP's threads waiting passively (set before torch loads)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from dtrain.launch import threads
from tests.conftest import child_env


class ThreadsProbe(Callback):
    """Appends what each rank computes with, as training starts, to <folder>/rank<r>.jsonl."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        seen = {"threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"), "wait": os.environ.get("OMP_WAIT_POLICY")}
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\n")


@pytest.fixture
def eight_cores(monkeypatch):
    """A process pinned to 8 cores, with no allotment from anyone else."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    for name in ("OMP_NUM_THREADS", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(threads._set_here, "torch", torch.get_num_threads())  # this process's count: as if dtrain had set it


def test_auto_is_the_share_of_what_the_process_may_use(eight_cores, monkeypatch):
    assert threads.resolve("auto") == (8, "8 cores (CPU affinity)")
    assert threads.resolve("auto", processes=2)[0] == 4  # dtrain's (or Lightning's) ranks on these cores
    assert threads.resolve("auto", processes=16)[0] == 1
    assert threads.resolve(3, processes=2)[0] == 3  # a number is taken as it is
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a user's, or Ray's for its workers
    assert threads.resolve("auto") == (2, "2 cores (OMP_NUM_THREADS)")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert threads.resolve("auto")[0] == 3
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # srun started each rank with its own CPUs: no sharing
    assert threads.resolve("auto", processes=2)[0] == 3


def test_torchrun_ranks_share_the_node_and_a_callers_torch_threads_count(eight_cores, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.resolve("auto", processes=4)[0] == 2
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    before = torch.get_num_threads()
    monkeypatch.setitem(threads._set_here, "torch", 4)  # dtrain set 4 (whatever earlier tests left) ...
    torch.set_num_threads(1)  # ... then a program that calls run() chose one thread
    try:
        assert threads.resolve("auto") == (1, "1 core (this process's torch threads)")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("quota, cores", [("150000 100000", 2), ("max 100000", None), ("50000 100000", 1)])
def test_a_cgroup_quota_rounds_up_to_whole_cores(tmp_path, monkeypatch, quota, cores):
    (tmp_path / "cpu.max").write_text(quota + "\n")
    monkeypatch.setattr(threads, "CGROUP_ROOT", tmp_path)
    assert threads._cgroup_cpus() == cores


# The first run's torch must not be loaded before dtrain sets the wait policy (OpenMP reads it once).
WRAPPED_MAIN = """
import sys
import dtrain.launch.threads as threads
set_wait_policy = threads.set_wait_policy
def checked():
    print("torch loaded before the wait policy:", "torch" in sys.modules, file=sys.stderr)
    set_wait_policy()
threads.set_wait_policy = checked
from dtrain.__main__ import main
sys.argv[1:] = sys.argv[2:]
main()
"""


@pytest.mark.slow
def test_ddp_ranks_share_the_cores_and_a_resumed_run_keeps_the_count(tmp_path):
    probe = tmp_path / "probe"
    env = {k: v for k, v in child_env().items() if k != "OMP_NUM_THREADS"}  # auto's own share, not a test worker's one thread
    first = subprocess.run(
        [sys.executable, "-c", WRAPPED_MAIN, "--", "model=mlp", "budget=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=2", "test=false",
         "logger=[csv]", "trainer.enable_progress_bar=false", f"paths.runs_dir={tmp_path / 'runs'}",
         "+callbacks.threads_probe._target_=tests.test_threads.ThreadsProbe", f"+callbacks.threads_probe.folder={probe}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    checks = [line for line in first.stderr.splitlines() if line.startswith("torch loaded before the wait policy:")]
    assert checks and checks[0].endswith("False"), checks  # on the CPU, run() itself loads torch first
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert OmegaConf.load(run_dir / "config.yaml").runtime.threads == share
    for rank in (0, 1):
        (seen,) = [json.loads(line) for line in (probe / f"rank{rank}.jsonl").read_text().splitlines()]
        assert seen == {"threads": share, "omp": str(share), "wait": "PASSIVE"}, (rank, seen)

    # One process now (auto would take every core), yet the run keeps the count its weights were reduced with.
    again = subprocess.run(
        [sys.executable, "-m", "dtrain", f"resume={run_dir}", "trainer.devices=1", "trainer.max_steps=3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((probe / "rank0.jsonl").read_text().splitlines()[-1])
    assert resumed["threads"] == share and OmegaConf.load(run_dir / "config.yaml").runtime.threads == share


def test_runs_started_side_by_side_split_the_cores_and_ended_runs_free_theirs(tmp_path, monkeypatch):
    from dtrain.launch import core_shares

    monkeypatch.setattr(core_shares, "FOLDER", tmp_path)
    cores = set(range(8))
    core_shares.announce(cores)
    other = {"pid": os.getppid(), "started": core_shares._started(os.getppid()), "cores": sorted(cores), "threads": None}
    (tmp_path / "other.json").write_text(json.dumps(other))  # a run that announced itself and is still deciding
    (tmp_path / "ended.json").write_text(json.dumps({**other, "pid": 2**22 + 1, "threads": 8}))  # its process is gone
    assert core_shares.take(cores, 8) == (4, 1)
    assert not (tmp_path / "ended.json").exists()
    (tmp_path / "other.json").write_text(json.dumps({**other, "threads": 6}))  # it decided: 6 of the 8
    assert core_shares.take(cores, 8) == (2, 1)
    assert core_shares.take({8, 9}, 2) == (2, 0)  # other cores: nobody to share with
    core_shares.withdraw()
    assert [p.name for p in tmp_path.glob("*.json")] == ["other.json"]


def test_cores_other_processes_keep_busy_while_torch_loads(monkeypatch):
    total, idle = threads._cpu_jiffies(os.sched_getaffinity(0))  # this machine's own counters read
    assert total > idle > 0
    # Two cores over one second (100 ticks each): 150 ticks busy, 90 of them this process's own.
    readings, own = iter([(1000, 400), (1200, 450)]), iter([10.0, 100.0])
    monkeypatch.setattr(threads, "_cpu_jiffies", lambda cores: next(readings))
    monkeypatch.setattr(threads, "_own_cpu_ticks", lambda: next(own))
    assert threads.others_busy_cores({0, 1}, lambda: None) == pytest.approx(0.6)
    readings, own = iter([(1000, 400), (1010, 400)]), iter([0.0, 10.0])  # a window too short to say anything
    assert threads.others_busy_cores({0, 1}, lambda: None) == 0.0


def test_a_later_run_in_a_warm_process_does_not_wait_for_runs_started_with_the_process(eight_cores, tmp_path, monkeypatch):
    """The wait for runs started alongside is as long as this run took to announce itself: for a
    process that loaded torch long ago (a reused sweep actor, this test process), counted from the
    run's own start, not from the process's (which would always wait the full 2 s)."""
    from dtrain.launch import core_shares

    monkeypatch.setattr(core_shares, "FOLDER", tmp_path)
    assert threads._age() > 1  # pytest has run for a while, with torch loaded
    waits = []
    monkeypatch.setattr(threads.time, "sleep", waits.append)
    cfg = OmegaConf.create({"runtime": {"threads": "auto"}})
    assert threads.settle_threads(cfg, 1, tmp_path / "run") == 8
    assert len(waits) == 1 and waits[0] < 0.5
    core_shares.withdraw()
