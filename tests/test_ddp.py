"""DDP with 2 real processes over gloo: ranks see different batches, end with identical
parameters, equal to one process with the same global batch; multiruns of DDP jobs work."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import dtrain_cli

SMALL_LM = [
    "model=transformer", "model.net.d_model=32", "model.net.n_layers=1", "data.max_bytes=60000",
    "data.batch_size=16", "data.block_size=32", "model/optimizer=sgd", "model.optimizer.lr=0.5", "~model/scheduler",
    "budget=smoke", "trainer.max_steps=6", "logger=[csv]", "trainer.enable_progress_bar=false",
    "+callbacks.probe._target_=tests.probes.RankProbe",
]


def probe(run_dir: Path, rank: int):
    record = json.loads((run_dir / "probe" / f"rank{rank}.json").read_text())
    return record, torch.load(run_dir / "probe" / f"rank{rank}.pt")


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_ranks_split_the_data_and_agree_with_one_process(tmp_path, strategy):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp = dtrain_cli(*SMALL_LM, f"trainer={strategy}", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(ddp_dir)})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = dtrain_cli(*SMALL_LM, "trainer=cpu", cwd=tmp_path, env={"DTRAIN_RUN_DIR": str(single_dir)})
    assert single.returncode == 0, single.stderr[-3000:]

    (rank0, params0), (rank1, params1) = probe(ddp_dir, 0), probe(ddp_dir, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert len(rank0["batches"]) == len(rank1["batches"]) == 6
    assert not set(rank0["batches"]) & set(rank1["batches"]), "both ranks trained on the same batch"

    _, reference = probe(single_dir, 0)
    moved = False
    for name, value in reference.items():
        assert torch.equal(params0[name], params1[name]), f"ranks disagree on {name}"
        torch.testing.assert_close(params0[name], value, rtol=1e-5, atol=1e-6, msg=f"{name}: DDP != one process")
        moved |= not torch.equal(value, torch.zeros_like(value))
    assert moved


def test_multirun_of_ddp_jobs(tmp_path):
    done = dtrain_cli("-m", *SMALL_LM, "trainer=ddp", "model.optimizer.lr=0.1,0.3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted((tmp_path / "runs" / "multirun").glob("*/*/[0-9]"))
    assert len(jobs) == 2
    lrs = set()
    for job in jobs:
        assert (job / "probe" / "rank0.json").exists() and (job / "probe" / "rank1.json").exists()
        assert (job / "checkpoints" / "last.ckpt").exists()
        lrs.add((job / "config.yaml").read_text().split("lr: ")[1].split()[0])
    assert lrs == {"0.1", "0.3"}
