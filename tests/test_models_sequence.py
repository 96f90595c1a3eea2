"""Sequence models: recurrent forecasters and classifiers, language models."""

import pytest


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_recurrent_smoke(train, model):
    metrics, _ = train(f"model={model}", "budget=smoke")
    assert {"test/mse", "test/mae", "baseline/naive_mse"} <= set(metrics)


def test_classification_task_takes_an_lstm_net_on_sequences(train):
    metrics, _ = train("model=mlp", "model/net=lstm", "data=sequences", "budget=smoke")
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_transformer_smoke(train):
    metrics, _ = train("model=transformer", "budget=smoke")
    assert metrics["baseline/unigram_entropy_bits"] > 4


@pytest.mark.bars
@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_recurrent_beats_naive_forecast(train, model):
    metrics, _ = train(f"model={model}")
    assert metrics["test/mse"] <= 0.8 * metrics["baseline/naive_mse"], metrics


@pytest.mark.bars
def test_lstm_classifies_digit_rows(train):
    metrics, _ = train("model=mlp", "model/net=lstm", "data=sequences", "trainer.max_epochs=30")
    assert metrics["test/acc"] >= 0.9, metrics


@pytest.mark.slow
def test_transformer_bits_per_char(train):
    metrics, _ = train("model=transformer")
    assert metrics["test/bpc"] <= metrics["baseline/unigram_entropy_bits"] - 1.5, metrics


@pytest.mark.parametrize("model", ["seq2seq", "seq2seq_lstm"])
def test_seq2seq_smoke(train, model):
    metrics, _ = train(f"model={model}", "budget=smoke")
    assert 0.0 <= metrics["test/exact_match"] <= 1.0


@pytest.mark.bars
@pytest.mark.parametrize("model", ["seq2seq", "seq2seq_lstm"])
def test_seq2seq_reverses(train, model):
    metrics, _ = train(f"model={model}")
    assert metrics["test/exact_match"] >= 0.9, metrics


def test_bert_smoke(train):
    metrics, _ = train("model=bert", "budget=smoke", "data.max_bytes=300000")
    assert 0.0 <= metrics["test/masked_acc"] <= 1.0
    assert 0.0 < metrics["baseline/most_frequent_token_acc"] < 1.0


@pytest.mark.bars
def test_bert_masked_accuracy(train):
    metrics, _ = train("model=bert")
    assert metrics["test/masked_acc"] >= 3 * metrics["baseline/most_frequent_token_acc"], metrics
