"""Tabular models: MLP classification (breast cancer) and regression (diabetes), smoke runs and bars."""

import statistics

import pytest


@pytest.mark.parametrize("model", ["mlp", "mlp_regression"])
def test_smoke(train, model):
    metrics, run_dir = train(f"model={model}", "budget=smoke")
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "test/loss" in metrics


@pytest.mark.bars
def test_mlp_classifies_breast_cancer(train, record_bar):
    metrics, _ = train("model=mlp")
    record_bar("test/acc", metrics["test/acc"], 0.95)
    assert metrics["test/acc"] >= 0.95, metrics


@pytest.mark.bars
def test_mlp_regression_on_diabetes(train, record_bar):
    # 89 test patients make one split noisy (least squares itself scores 0.34-0.47 on splits 0-4),
    # so the bar is the mean over five splits (measured: 0.37-0.47, mean 0.43, about 35 s).
    scores = [train("model=mlp_regression", f"data.split_seed={s}")[0]["test/r2"] for s in range(5)]
    record_bar("mean test/r2 over 5 splits", statistics.mean(scores), 0.4)
    assert statistics.mean(scores) >= 0.4, scores
