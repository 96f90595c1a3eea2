"""The sharded trainers keep their promises: FSDP and ZeRO-3 leave each rank about half the
weights, ZeRO-1/2 about half the optimizer state, offload steps with DeepSpeed's CPU Adam, and
every one ends with the weights a single process reaches on the same global batch, and tests
them as they are (no best checkpoint: fit ends before any validation)."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, dtrain_cli

# Adam with a large step, no dropout (ranks draw different masks), 4 steps, no validation:
# every difference in the final weights comes from the strategy. No best checkpoint either, so
# the test stage runs on the weights as the strategy left them.
COMMON = (
    "model=mlp", "model/optimizer=adam", "model.optimizer.lr=0.02", "model.net.dropout=0", "model.net.hidden=96",
    "budget=smoke", "trainer.max_steps=4", "trainer.limit_val_batches=0", "logger=[csv]", "~callbacks.best_checkpoint",
    "~callbacks.last_checkpoint", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "+callbacks.probe._target_=tests.shard_probe.ShardProbe",
)


class Runs:
    """Each trainer runs once per module (a 2-process run costs 10-30 s here), on demand."""

    def __init__(self, root: Path, common: tuple[str, ...] = COMMON):
        self.root = root
        self.common = common
        self.done: dict[str, Path] = {}

    def __call__(self, trainer: str, *extra: str) -> Path:
        key = " ".join((trainer, *extra))
        if key not in self.done:
            run_dir = self.root / f"run{len(self.done)}"
            result = dtrain_cli(f"trainer={trainer}", *self.common, *extra, cwd=self.root, env={"DTRAIN_RUN_DIR": str(run_dir)})
            assert result.returncode == 0, result.stderr[-3000:]
            self.done[key] = run_dir
        return self.done[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("sharded"))


def shards(run_dir: Path) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
    ranks = sorted((run_dir / "shards").glob("rank*.json"))
    return [json.loads(p.read_text()) for p in ranks], [torch.load(p.with_suffix(".pt")) for p in ranks]


def test_loss(run_dir: Path) -> float:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return float(next(row["test/loss"] for row in rows if row.get("test/loss")))


test_loss.__test__ = False  # a helper, not a test


def assert_same_weights(run_dir: Path, reference: Path, atol: float = 2e-6) -> None:
    """Every rank's full weights equal the single-process run's, and training moved them far more
    than the tolerance; the test stage, without a best checkpoint to load, measures those weights."""
    (ref_record,), (ref,) = shards(reference)
    initial = torch.load(reference / "shards" / "initial.pt")
    moved = max((ref[k] - initial[k]).abs().max().item() for k in ref)
    assert moved > 1000 * atol
    records, weights = shards(run_dir)
    assert len(records) == 2 and {r["world_size"] for r in records} == {2}
    for full in weights:
        assert full.keys() == ref.keys()
        worst = max((full[k] - ref[k]).abs().max().item() for k in ref)
        assert worst < atol, f"max abs difference from the single-process run: {worst}"
    assert not list((run_dir / "checkpoints").glob("best*")), "this run must test without a best checkpoint"
    assert test_loss(run_dir) == pytest.approx(test_loss(reference), rel=1e-5)


def about_half(local: int, full: int) -> bool:
    return full / 2 - 2 <= local <= full / 2 + 64  # DeepSpeed and FSDP pad a flat buffer to split it


@pytest.fixture(scope="module")
def reference(runs):
    return runs("cpu")


def test_fsdp_shards_parameters_and_matches_one_process(runs, reference):
    run_dir = runs("fsdp")
    records, _ = shards(run_dir)
    full = records[0]["full_param_numel"]
    assert full > 10_000
    for record in records:
        assert record["strategy"] == "CPUFSDP"
        assert about_half(record["local_param_numel"], full), record
        assert about_half(record["optimizer_state_numel"], full), record  # Adam state lives on the shard
    assert sum(r["local_param_numel"] for r in records) == full
    assert_same_weights(run_dir, reference)


@pytest.mark.parametrize("stage", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_zero_1_2_partition_optimizer_state_and_match_one_process(runs, reference, stage):
    run_dir = runs(f"deepspeed_zero{stage}")
    records, _ = shards(run_dir)
    for record in records:
        assert record["zero_stage"] == stage and record["optimizer"] == "Adam"
        assert record["local_param_numel"] == record["full_param_numel"]  # weights stay whole
        assert about_half(record["optimizer_state_numel"], record["full_param_numel"]), record
    assert_same_weights(run_dir, reference)


def test_zero_3_partitions_weights_and_matches_one_process(runs, reference):
    run_dir = runs("deepspeed_zero3")
    records, _ = shards(run_dir)
    for record in records:
        assert record["zero_stage"] == 3 and not record["offload_param"]
        assert about_half(record["local_param_numel"], record["full_param_numel"]), record
        assert about_half(record["optimizer_state_numel"], record["full_param_numel"]), record
    assert_same_weights(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("trainer,stage", [("deepspeed_zero2_offload", 2), ("deepspeed_zero3_offload", 3)])
def test_offload_steps_with_deepspeed_cpu_adam_and_matches_torch_adam(runs, reference, trainer, stage):
    run_dir = runs(trainer)
    records, _ = shards(run_dir)
    for record in records:
        assert record["zero_stage"] == stage and record["offload_optimizer"]
        assert record["optimizer"] == "DeepSpeedCPUAdam"
        assert record["offload_param"] == (stage == 3)
        assert about_half(record["optimizer_state_numel"], record["full_param_numel"]), record
        if stage == 3:
            assert about_half(record["local_param_numel"], record["full_param_numel"]), record
            assert record["param_devices"] == ["cpu"]
    assert_same_weights(run_dir, reference, atol=1e-5)  # DeepSpeed's vectorised Adam rounds differently
