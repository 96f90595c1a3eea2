"""Two "nodes" of one process each, started by launchers/torchrun_multinode.sh on this machine,
train one run together: one run directory, the same final weights on both, different batches."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

SCRIPT = REPO / "launchers" / "torchrun_multinode.sh"
TINY = (
    "model=transformer", "budget=smoke", "model.net.d_model=32", "model.net.n_layers=2", "data.max_bytes=20000",
    "data.batch_size=8", "logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "+callbacks.probe._target_=tests.probes.RankProbe",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(tmp_path: Path, nodes: int, procs_per_node: int, *overrides: str, timeout: float = 400) -> Path:
    """Start the launcher once per node (as each node's operator would) and wait for all of them."""
    run_dir = tmp_path / "run"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "DTRAIN_RUN_DIR": str(run_dir),
        "DTRAIN_RUNS_DIR": str(tmp_path / "runs"), "NNODES": str(nodes), "NPROC_PER_NODE": str(procs_per_node),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
    }
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT_RANK"):
        env.pop(key, None)
    launches = [
        subprocess.Popen(["bash", str(SCRIPT), *overrides], cwd=tmp_path, env={**env, "NODE_RANK": str(node)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in range(nodes)
    ]
    try:
        outputs = [launch.communicate(timeout=timeout)[0] for launch in launches]
    finally:
        for launch in launches:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
    for node, (launch, output) in enumerate(zip(launches, outputs)):
        assert launch.returncode == 0, f"node {node}:\n{output[-3000:]}"
    return run_dir


def test_two_nodes_train_one_run(tmp_path):
    run_dir = run_nodes(tmp_path, 2, 1, *TINY, "trainer=ddp")
    probes = [json.loads((run_dir / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [p["world_size"] for p in probes] == [2, 2]
    # Each rank trained on its own half of every global batch ...
    assert len(probes[0]["batches"]) == len(probes[1]["batches"]) == 3
    assert all(a != b for a, b in zip(probes[0]["batches"], probes[1]["batches"]))
    # ... and the gradients were all-reduced across the nodes: the weights are the same.
    weights = [torch.load(run_dir / "probe" / f"rank{r}.pt") for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    # One run directory, written once: config, metrics and the record of a 2-node world.
    env = json.loads((run_dir / "env.json").read_text())
    assert env["num_nodes"] == 2 and env["world_size"] == 2
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.csv").exists()
    assert not (tmp_path / "runs").exists()  # no node fell back to a run directory of its own
