"""trainer=model_parallel: the transformer's attention and MLP split over 2 tensor-parallel ranks
(FSDP2 over the data-parallel dimension of the same mesh) train exactly like the unsharded model."""

import pytest
import torch

from tests.test_pipeline import (  # noqa: F401
    CLI, NO_VALIDATION, TINY, assert_matches_reference, assert_same_batch_within_replicas, has_best_checkpoint, launch,
    load_steps, reference, test_metric,
)


def test_tensor_parallel_matches_unsharded_model(launch, reference):  # noqa: F811
    ref_steps, ref_test_loss = reference
    # No validation, so no best checkpoint: the test stage runs on the sharded weights as they are.
    run_dir = launch(*TINY, "trainer=model_parallel", "trainer.strategy.tensor_parallel_size=2", NO_VALIDATION)
    assert not has_best_checkpoint(run_dir)
    ranks = load_steps(run_dir, 2)
    # Both ranks load the same batch (one replica) and see the unsharded model's losses,
    # gradients and final weights.
    assert_matches_reference(ranks, ref_steps)
    for rank in ranks:
        assert set(rank["grads"][0]) == set(ref_steps["grads"][0])
        # Each rank holds half of every planned layer: q/k/v and mlp.up by output rows,
        # attn.out and mlp.down by input columns; the rest whole.
        shapes = rank["local_shapes"]
        for block in range(2):
            prefix = f"net.blocks.{block}"
            for name in ("attn.q", "attn.k", "attn.v"):
                assert shapes[f"{prefix}.{name}.weight"] == (16, 32)
            assert shapes[f"{prefix}.attn.out.weight"] == (32, 16)
            assert shapes[f"{prefix}.mlp.up.weight"] == (64, 32)
            assert shapes[f"{prefix}.mlp.down.weight"] == (32, 64)
        assert shapes["net.head.proj.weight"] == (256, 32)
    assert test_metric(run_dir) == pytest.approx(ref_test_loss, rel=1e-5)


def test_plan_refuses_shapes_that_do_not_split():
    """Heads are never cut in half: 1 head over 2 ranks is refused, naming the key to change."""
    from dtrain.config.errors import ConfigError
    from dtrain.nets.mlp import MLP
    from dtrain.nets.transformer import Transformer
    from dtrain.parallel.tensor_parallel import check_plan

    plan = check_plan(Transformer(256, 64, d_model=32, n_layers=2, n_heads=4), 2)
    assert len(plan.colwise) == 8 and len(plan.rowwise) == 4
    with pytest.raises(ConfigError, match="blocks.0.attn has 1 heads, which do not split over 2"):
        check_plan(Transformer(256, 64, d_model=32, n_layers=1, n_heads=1), 2)
    with pytest.raises(ConfigError, match="declares no tensor-parallel plan.*tensor_parallel_size=1"):
        check_plan(MLP(8, 2), 2)


@pytest.mark.slow
def test_tensor_and_data_parallel_on_two_nodes(tmp_path, reference):  # noqa: F811
    """2 torchrun nodes x 2 processes: a 2 x 2 mesh, tensor parallel within a node, FSDP2 across
    nodes. Both shards of a replica load the same batch, the replicas different ones, and together
    they train like one process."""
    from tests.test_multinode import run_nodes

    ref_steps, _ = reference
    run_dir = run_nodes(tmp_path, 2, 2, *CLI, *TINY, "trainer=model_parallel", "+callbacks.probe._target_=tests.probes.RankProbe")
    assert_same_batch_within_replicas(run_dir, replicas=2, per_replica=2)
    ranks = load_steps(run_dir, 4)
    assert_matches_reference(ranks, ref_steps, replicas=2)
    # q is split 2 ways by tensor parallelism and again by FSDP2: a quarter on each rank.
    assert all(rank["local_shapes"]["net.blocks.0.attn.q.weight"] == (8, 32) for rank in ranks)


@pytest.mark.slow
def test_tensor_parallel_ranks_agree_with_dropout(launch):
    """Dropout outside the split layers must draw the same mask on both shards of a replica, or
    their copies of the unsplit weights (embeddings, norms) drift apart without any error."""
    run_dir = launch(*TINY, "model.net.dropout=0.2", "trainer=model_parallel")
    ranks = load_steps(run_dir, 2)
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(ranks[1]["losses"]), rtol=0, atol=0)
    for name in ("net.embed.tokens.weight", "net.blocks.1.norm2.weight", "net.head.proj.weight"):
        torch.testing.assert_close(ranks[0]["params"][name], ranks[1]["params"][name], rtol=0, atol=0)
