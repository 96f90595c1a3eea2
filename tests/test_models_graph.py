"""Graph models: GCN and GAT on KarateClub, a generated SBM graph and generated graph classification."""

import statistics

import pytest


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gcn"],
        ["model=gat"],
        ["model=gcn", "data.dataset=sbm"],
        ["model=gat", "data.dataset=sbm_graphs", "data.num_graphs=60", "data.batch_size=8", "model.net.pool=mean"],
    ],
    ids=["gcn-karate", "gat-karate", "gcn-sbm", "gat-graphs"],
)
def test_smoke(train, overrides):
    metrics, _ = train(*overrides, "budget=smoke")
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.bars
@pytest.mark.parametrize("model", ["gcn", "gat"])
def test_karate_held_out_accuracy(train, record_bar, model):
    scores = [train(f"model={model}", f"seed={seed}")[0]["test/acc"] for seed in range(5)]
    record_bar("mean test/acc over 5 seeds", statistics.mean(scores), 0.7)
    assert statistics.mean(scores) >= 0.7, scores


@pytest.mark.bars
@pytest.mark.parametrize("model", ["gcn", "gat"])
def test_sbm_node_accuracy(train, record_bar, model):
    metrics, _ = train(f"model={model}", "data.dataset=sbm")
    record_bar("test/acc", metrics["test/acc"], 0.9)
    assert metrics["test/acc"] >= 0.9, metrics
