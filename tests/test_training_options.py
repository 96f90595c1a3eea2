"""Gradient accumulation, gradient clipping, activation checkpointing and torch.compile compose with
the sharded strategies (same weights as one plain process), and combinations the libraries cannot
do are refused by name before any process starts."""

import pytest
import torch

from dtrain.config.compose import compose
from dtrain.config.errors import ConfigError
from dtrain.config.validate import validate
from tests.test_strategies_sharded import Runs, shards

# A small transformer; Adam with a step large enough that clipping changes the result.
TINY = (
    "model=transformer", "model/optimizer=adam", "model.optimizer.lr=0.01", "~model.scheduler", "model.net.d_model=32",
    "model.net.n_layers=2", "model.net.n_heads=2", "data.block_size=16", "data.batch_size=8", "data.max_bytes=100000",
    "budget=smoke", "trainer.max_steps=4", "test=false", "logger=[csv]", "~callbacks.best_checkpoint",
    "~callbacks.last_checkpoint", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "+callbacks.probe._target_=tests.shard_probe.ShardProbe",
)
CLIP_VALUE = ("trainer.gradient_clip_val=0.002", "+trainer.gradient_clip_algorithm=value")
CLIP_NORM = ("trainer.gradient_clip_val=0.05",)
OPTIONS = ("trainer.accumulate_grad_batches=2", "runtime.activation_checkpointing=true")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("options"), common=TINY)


def final_weights(run_dir):
    records, weights = shards(run_dir)
    for other in weights[1:]:
        assert max((other[k] - weights[0][k]).abs().max().item() for k in other) == 0.0  # ranks agree
    return weights


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_clipping_by_norm_changes_the_result(runs):
    plain = final_weights(runs("cpu"))[0]
    assert max_difference(final_weights(runs("cpu", *CLIP_NORM))[0], plain) > 1e-3


@pytest.mark.slow  # compiling in two processes takes minutes on two shared cores
def test_fsdp_with_accumulation_value_clipping_checkpointing_and_compile(runs):
    reference = final_weights(runs("cpu", *CLIP_VALUE))[0]
    assert max_difference(reference, final_weights(runs("cpu"))[0]) > 1e-3  # value clipping is in effect
    weights = final_weights(runs("fsdp", *CLIP_VALUE, *OPTIONS, "runtime.compile=true"))
    assert len(weights) == 2
    assert max_difference(weights[0], reference) < 1e-5


def test_zero3_with_accumulation_norm_clipping_and_checkpointing(runs):
    reference = final_weights(runs("cpu", *CLIP_NORM))[0]
    weights = final_weights(runs("deepspeed_zero3", *CLIP_NORM, *OPTIONS))
    assert len(weights) == 2
    assert max_difference(weights[0], reference) < 1e-5


def test_activation_checkpointing_wraps_the_repeated_blocks():
    from hydra.utils import instantiate

    from dtrain.nets.transformer import Transformer
    from dtrain.parallel.dims import ParallelDims
    from dtrain.parallel.parallelize import ParallelOptions, parallelize
    from dtrain.tasks.language_model import LanguageModel

    net = Transformer(vocab_size=16, max_len=8, d_model=16, n_layers=3, n_heads=2, dropout=0.0)
    task = LanguageModel(net, instantiate({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}))
    parallelize(task.net, ParallelDims(world=1), ParallelOptions(activation_checkpointing=True))
    assert all(block.forward.__name__ == "checkpointed" for block in task.net.blocks)
    saved = []
    tokens = torch.randint(0, 16, (2, 8))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        task.net(tokens).sum().backward()
    plain = Transformer(vocab_size=16, max_len=8, d_model=16, n_layers=3, n_heads=2, dropout=0.0)
    plain_saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain_saved.append(t.numel()) or t, lambda t: t):
        plain(tokens).sum().backward()
    assert sum(saved) < 0.6 * sum(plain_saved)  # each block keeps its input, not its insides


@pytest.mark.parametrize(
    "overrides,key",
    [
        (("trainer=fsdp", "trainer.gradient_clip_val=0.5"), "trainer.gradient_clip_algorithm"),
        (("trainer=deepspeed_zero2", *CLIP_VALUE), "trainer.gradient_clip_algorithm"),
        (("trainer=deepspeed_zero2_offload", "model/optimizer=sgd"), "model.optimizer"),
        (("trainer=deepspeed_zero3", "trainer.precision=64-true"), "trainer.precision"),
        (("trainer=fsdp", "trainer.precision=64-true"), "trainer.precision"),
        (("+model.compile=true",), "model.compile"),
    ],
)
def test_unsupported_combinations_are_refused_before_start(overrides, key, tmp_path):
    with pytest.raises(ConfigError) as error:
        validate(compose(["model=mlp", *overrides], run_dir=tmp_path))
    assert error.value.key == key
