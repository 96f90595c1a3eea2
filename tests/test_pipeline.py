"""trainer=pipeline: the transformer split over 2 stages (2 processes), micro-batches on a GPipe or
1F1B schedule, gives the unsplit model's losses and gradients, and every rank ends with the whole
trained net."""

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO

# A tiny transformer, plain SGD (no schedule) so that equal gradients mean equal weights to
# float tolerance; the global batch of 8 is 4 micro-batches of 2.
TINY = (
    "model=transformer", "budget=smoke", "model.net.d_model=32", "model.net.n_layers=2", "data.max_bytes=20000",
    "data.batch_size=8", "model.optimizer._target_=torch.optim.SGD", "~model.optimizer.betas",
    "model.optimizer.weight_decay=0.0", "model.optimizer.lr=0.5", "~model/scheduler",
    "+callbacks.steps._target_=tests.test_pipeline.StepProbe",
)
CLI = ("logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor as the whole model sees it (DTensor shards gathered), on the CPU."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu().clone()


class StepProbe(Callback):
    """Writes <run>/steps/rank<r>.pt: the loss of every step, the gradients this rank holds at
    every optimizer step, and the parameters this rank holds once fitting is over."""

    def __init__(self):
        self.losses: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: _full(p.grad) for n, p in pl_module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_fit_end(self, trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / "steps"
        out.mkdir(parents=True, exist_ok=True)
        params = {n: _full(p) for n, p in pl_module.named_parameters()}
        held = {n: tuple(getattr(p, "_local_tensor", p).shape) for n, p in pl_module.named_parameters()}
        record = {"losses": self.losses, "grads": self.grads, "params": params, "local_shapes": held}
        torch.save(record, out / f"rank{trainer.global_rank}.pt")


def load_steps(run_dir: Path, world_size: int) -> list[dict]:
    return [torch.load(run_dir / "steps" / f"rank{r}.pt") for r in range(world_size)]


def test_metric(run_dir: Path, key: str = "test/loss") -> float:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return float(next(row[key] for row in rows if row.get(key)))


test_metric.__test__ = False  # a helper, not a test


@pytest.fixture
def launch(train, monkeypatch):
    """launch(*overrides) -> run dir: `python -m dtrain <overrides>` with this process as rank 0
    (it starts the other ranks itself, which import the probes from this checkout)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    def _launch(*overrides: str) -> Path:
        return train(*overrides)[1]

    return _launch


_REFERENCE: dict[str, tuple[dict, float]] = {}


@pytest.fixture
def reference(train) -> tuple[dict, float]:
    """The unsplit model in one process (this one) on the same batches from the same initial
    weights; run once per session and shared with the other strategies' tests."""
    if "tiny" not in _REFERENCE:
        _, run_dir = train(*TINY, "trainer=cpu")
        _REFERENCE["tiny"] = load_steps(run_dir, 1)[0], test_metric(run_dir)
    return _REFERENCE["tiny"]


def assert_matches_reference(ranks: list[dict], reference: dict, replicas: int = 1) -> None:
    """Every rank: the reference's losses (averaged over data-parallel replicas, which see
    different halves of the batch), its gradients for the parameters the rank trains and, at the
    end, its weights for the whole net."""
    close = dict(rtol=1e-4, atol=1e-6)
    per_replica = len(ranks) // replicas
    losses = torch.tensor([r["losses"] for r in ranks[::per_replica]]).mean(0)
    torch.testing.assert_close(losses, torch.tensor(reference["losses"]), **close)
    for rank in ranks:
        assert len(rank["grads"]) == len(reference["grads"]) == 3
        for step, ref_step in zip(rank["grads"], reference["grads"]):
            assert step, "a rank trained nothing"
            for name, grad in step.items():
                torch.testing.assert_close(grad, ref_step[name], **close, msg=lambda m, n=name: f"{n}: {m}")
        for name, value in reference["params"].items():
            torch.testing.assert_close(rank["params"][name], value, **close, msg=lambda m, n=name: f"{n}: {m}")


# Validation off: fit ends before any, so there is no best checkpoint and the test stage runs on
# the weights as training left them; with validation the test stage loads the best checkpoint.
NO_VALIDATION = "trainer.limit_val_batches=0"


def has_best_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("best*"))


@pytest.mark.parametrize("schedule,validate", [("1f1b", False), pytest.param("gpipe", True, marks=pytest.mark.slow)])
def test_pipeline_matches_unsplit_model(launch, reference, schedule, validate):
    ref_steps, ref_test_loss = reference
    run_dir = launch(*TINY, "trainer=pipeline", f"trainer.strategy.schedule={schedule}", "trainer.strategy.microbatches=4",
                     *(() if validate else (NO_VALIDATION,)))
    assert has_best_checkpoint(run_dir) == validate
    ranks = load_steps(run_dir, 2)
    assert_matches_reference(ranks, ref_steps)
    # The stages split the net: each parameter is trained by exactly one rank, and both train some.
    owned = [set(rank["grads"][0]) for rank in ranks]
    assert owned[0] and owned[1] and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(ref_steps["grads"][0])
    assert any("embed" in n for n in owned[0]) and any("head" in n for n in owned[1])
    # Evaluation runs the whole net, brought up to date from both stages (or loaded whole).
    assert test_metric(run_dir) == pytest.approx(ref_test_loss, rel=1e-5)


@pytest.mark.slow
def test_replicated_pipelines_on_two_nodes(tmp_path, reference):
    """2 torchrun nodes x 2 processes: 2 replicas of a 2-stage pipeline. Stages of one replica
    load the same batch, replicas different ones, and together they train like one process."""
    from tests.test_multinode import run_nodes

    ref_steps, _ = reference
    run_dir = run_nodes(tmp_path, 2, 2, *CLI, *TINY, "trainer=pipeline", "trainer.strategy.microbatches=2",
                        "+callbacks.probe._target_=tests.probes.RankProbe")
    assert_same_batch_within_replicas(run_dir, replicas=2, per_replica=2)
    ranks = load_steps(run_dir, 4)
    assert_matches_reference(ranks, ref_steps, replicas=2)
    assert set(ranks[0]["grads"][0]) == set(ranks[2]["grads"][0]) != set(ranks[1]["grads"][0])


def assert_same_batch_within_replicas(run_dir: Path, replicas: int, per_replica: int) -> None:
    import json

    batches = [json.loads((run_dir / "probe" / f"rank{r}.json").read_text())["batches"] for r in range(replicas * per_replica)]
    for replica in range(replicas):
        first = replica * per_replica
        assert all(batches[r] == batches[first] for r in range(first, first + per_replica))
    assert all(a != b for a, b in zip(batches[0], batches[per_replica]))
