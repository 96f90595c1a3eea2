"""trainer=pipeline: the transformer split over 2 stages (2 processes), micro-batches on a GPipe or
1F1B schedule, gives the unsplit model's losses and gradients (clipped by the global norm too);
each rank holds only its stage, in well under the memory of a single process, and the
checkpoints it writes are a single process's."""

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
    every optimizer step (before clipping, and as the optimizer used them: after), the parameters
    this rank holds once fitting is over and the most bytes of tensors it held after a step."""

    def __init__(self):
        self.losses: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []
        self.clipped: list[dict[str, torch.Tensor]] = []
        self.held_bytes = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: _full(p.grad) for n, p in pl_module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        # Gradients stay until the next step zeroes them: these are the ones the optimizer used.
        self.clipped.append({n: _full(p.grad) for n, p in pl_module.named_parameters() if p.grad is not None})
        # The most this rank holds: weights, gradients and optimizer state, between two steps.
        self.held_bytes = max(self.held_bytes, held_bytes(pl_module, trainer.optimizers, trainer.strategy))

    def on_fit_end(self, trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / "steps"
        out.mkdir(parents=True, exist_ok=True)
        params = {n: _full(p) for n, p in pl_module.named_parameters()}
        held = {n: tuple(getattr(p, "_local_tensor", p).shape) for n, p in pl_module.named_parameters()}
        record = {"losses": self.losses, "grads": self.grads, "clipped": self.clipped, "params": params, "local_shapes": held,
                  "held_bytes": self.held_bytes}
        torch.save(record, out / f"rank{trainer.global_rank}.pt")


def held_bytes(*roots) -> int:
    """Bytes of the distinct storages of every tensor reachable from `roots` (modules, optimizers,
    a strategy): each module's parameters, their gradients, buffers and tensor attributes, an
    optimizer's state and groups, whatever modules or tensors a strategy's attributes hold,
    through dicts, lists and tuples. Storages are counted once, however many tensors view them."""
    from lightning.pytorch.strategies import Strategy
    from torch import nn

    storages: dict[int, int] = {}
    seen: set[int] = set()

    def visit(value) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            local = getattr(value, "_local_tensor", value)  # a DTensor's shard is what the rank holds
            storage = local.untyped_storage()
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
            if isinstance(value, nn.Parameter) and value.grad is not None:
                visit(value.grad)
        elif isinstance(value, nn.Module):
            for module in value.modules():
                visit(module.__dict__)
        elif isinstance(value, torch.optim.Optimizer):
            visit(value.state)
            visit(value.param_groups)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(key)
                visit(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                visit(item)
        elif isinstance(value, Strategy):
            visit(value.__dict__)

    for root in roots:
        visit(root)
    return sum(storages.values())


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


# The pipeline's own fast case: 8 blocks (so that 2 stages can hold about half the net each),
# SGD with momentum (an optimizer state to checkpoint) and clipping by norm at a value every
# step's gradient norm exceeds.
CLIP = 0.1
DEEP_CLIPPED = (*TINY, "model.net.n_layers=8", f"trainer.gradient_clip_val={CLIP}", "+model.optimizer.momentum=0.9")

_REFERENCE: dict[str, tuple[dict, float, Path]] = {}


def reference_run(train, name: str, overrides: tuple) -> tuple[dict, float, Path]:
    """(steps, test loss, run dir) of `overrides` in one process (this one), run once per session."""
    if name not in _REFERENCE:
        _, run_dir = train(*overrides, "trainer=cpu")
        _REFERENCE[name] = load_steps(run_dir, 1)[0], test_metric(run_dir), run_dir
    return _REFERENCE[name]


@pytest.fixture
def reference(train) -> tuple[dict, float]:
    """The unsplit model in one process (this one) on the same batches from the same initial
    weights; run once per session and shared with the other strategies' tests."""
    return reference_run(train, "tiny", TINY)[:2]


def assert_matches_reference(ranks: list[dict], reference: dict, replicas: int = 1, stages: int | None = None) -> None:
    """Every rank: the reference's losses (averaged over data-parallel replicas, which see
    different halves of the batch) and its gradients for the parameters the rank trains. At the
    end every rank holds the reference's weights for the whole net or, with `stages` (pipeline
    stages of a replica: consecutive ranks), the stages of each replica hold the reference's
    weights between them, each parameter on exactly one stage."""
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
    if stages is None:
        for rank in ranks:
            for name, value in reference["params"].items():
                torch.testing.assert_close(rank["params"][name], value, **close, msg=lambda m, n=name: f"{n}: {m}")
        return
    for first in range(0, len(ranks), stages):
        replica = ranks[first:first + stages]
        held = [name for rank in replica for name in rank["params"]]
        assert len(held) == len(set(held)), "a parameter is held by two stages"
        assert set(held) == set(reference["params"])
        for rank in replica:
            for name, value in rank["params"].items():
                torch.testing.assert_close(value, reference["params"][name], **close, msg=lambda m, n=name: f"{n}: {m}")


def assert_clipped_like_reference(ranks: list[dict], reference: dict, clip: float) -> None:
    """The gradients each optimizer step used (after clipping) are the reference's, and the
    clipping did something: every step's whole-net norm exceeded `clip`."""
    for step in reference["grads"]:
        assert torch.linalg.vector_norm(torch.stack([g.norm() for g in step.values()])) > clip
    for rank in ranks:
        assert len(rank["clipped"]) == len(reference["clipped"]) == 3
        for step, ref_step in zip(rank["clipped"], reference["clipped"]):
            for name, grad in step.items():
                torch.testing.assert_close(grad, ref_step[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


# Validation off: fit ends before any, so there is no best checkpoint and the test stage runs on
# the weights as training left them; with validation the test stage loads the best checkpoint.
NO_VALIDATION = "trainer.limit_val_batches=0"


def has_best_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("best*"))


@pytest.mark.parametrize("schedule,validate", [("1f1b", False), pytest.param("gpipe", True, marks=pytest.mark.slow)])
def test_pipeline_matches_unsplit_model(launch, train, schedule, validate):
    """1F1B: the deep net, clipped by norm, without validation (the test stage runs on the stages
    as training left them); GPipe: the tiny net with validation (the test stage loads the best
    checkpoint into the stages)."""
    overrides = TINY if validate else DEEP_CLIPPED
    ref_steps, ref_test_loss, ref_dir = reference_run(train, "tiny" if validate else "deep_clipped", overrides)
    run_dir = launch(*overrides, "trainer=pipeline", f"trainer.strategy.schedule={schedule}", "trainer.strategy.microbatches=4",
                     *(() if validate else (NO_VALIDATION,)))
    assert has_best_checkpoint(run_dir) == validate
    ranks = load_steps(run_dir, 2)
    assert_matches_reference(ranks, ref_steps, stages=2)
    # The stages split the net: each parameter is trained by exactly one rank, and both train some.
    owned = [set(rank["grads"][0]) for rank in ranks]
    assert owned[0] and owned[1] and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(ref_steps["grads"][0])
    assert any("embed" in n for n in owned[0]) and any("head" in n for n in owned[1])
    # Evaluation runs the task's own test step through both stages (or loaded from the best checkpoint).
    assert test_metric(run_dir) == pytest.approx(ref_test_loss, rel=1e-5)
    if not validate:
        assert_clipped_like_reference(ranks, ref_steps, CLIP)
        # Each stage holds about half of what one process holds: weights, gradients, momentum.
        shares = [rank["held_bytes"] / ref_steps["held_bytes"] for rank in ranks]
        print(f"held bytes per rank / one process's: {shares} (of {ref_steps['held_bytes']} bytes)")
        assert max(shares) <= 0.6
        assert_checkpoint_is_one_process(run_dir / "checkpoints" / "last.ckpt", ref_dir / "checkpoints" / "last.ckpt")
        resume_in_one_process(train, run_dir, overrides)


def assert_checkpoint_is_one_process(path: Path, reference_path: Path) -> None:
    """The pipeline's checkpoint is the one a single process writes: the same weights under the
    same names, one optimizer state indexed the same way with the same momentum."""
    ckpt, ref = torch.load(path, weights_only=True), torch.load(reference_path, weights_only=True)
    assert list(ckpt["state_dict"]) == list(ref["state_dict"])
    torch.testing.assert_close(ckpt["state_dict"], ref["state_dict"], rtol=1e-4, atol=1e-6)
    (optimizer,), (ref_optimizer,) = ckpt["optimizer_states"], ref["optimizer_states"]
    assert optimizer["param_groups"] == ref_optimizer["param_groups"]
    assert sorted(optimizer["state"]) == sorted(ref_optimizer["state"]) == list(range(len(ref["state_dict"])))
    torch.testing.assert_close(optimizer["state"], ref_optimizer["state"], rtol=1e-4, atol=1e-6)


def resume_in_one_process(train, pipeline_dir: Path, overrides: tuple) -> None:
    """A one-process run (trainer=cpu) resumes from the pipeline's last checkpoint: Lightning
    loads its weights and optimizer state strictly, and training continues from step 3."""
    import shutil

    run_dir = pipeline_dir.parent / "resumed_in_one_process"
    shutil.copytree(pipeline_dir / "checkpoints", run_dir / "checkpoints")
    train(*overrides, "trainer=cpu", "trainer.max_steps=4", NO_VALIDATION, "test=false", f"resume={run_dir}", run_dir=run_dir)
    steps = load_steps(run_dir, 1)[0]
    assert len(steps["losses"]) == 1  # step 4 only


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
    assert_matches_reference(ranks, ref_steps, replicas=2, stages=2)
    assert set(ranks[0]["grads"][0]) == set(ranks[2]["grads"][0]) != set(ranks[1]["grads"][0])


def assert_same_batch_within_replicas(run_dir: Path, replicas: int, per_replica: int) -> None:
    import json

    batches = [json.loads((run_dir / "probe" / f"rank{r}.json").read_text())["batches"] for r in range(replicas * per_replica)]
    for replica in range(replicas):
        first = replica * per_replica
        assert all(batches[r] == batches[first] for r in range(first, first + per_replica))
    assert all(a != b for a, b in zip(batches[0], batches[per_replica]))
