"""Regression tests for the bugs issue 12 found by reading the code (each failed before its fix)."""

import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _evaluated_loss(task, batches) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer only warns
        for i, batch in enumerate(batches):
            task.validation_step(batch, i)
    return float(task.val_loss.compute())


def test_classification_loss_weighs_each_example_once():
    from dtrain.tasks.classification import Classification

    torch.manual_seed(0)
    task = Classification(nn.Linear(3, 2), functools.partial(torch.optim.SGD, lr=0.1), num_classes=2)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    # a full batch of 4 and a last batch of 1: the epoch's loss is the mean over the 5 examples
    measured = _evaluated_loss(task, [(x[:4], y[:4]), (x[4:], y[4:])])
    with torch.no_grad():
        expected = float(F.cross_entropy(task.net(x), y))
    assert measured == pytest.approx(expected, rel=1e-6)


def test_test_script_passes_each_argument_whole(tmp_path):
    """scripts/test.sh, with setup stubbed and pytest replaced by a probe that prints its
    arguments: a quoted marker expression reaches pytest as one argument."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    shutil.copy(repo / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("exit 0\n")
    probe = tmp_path / ".venv" / "bin" / "python"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    probe.chmod(0o755)
    args = ["-m", "not slow and not bars", "-k", "it's", "tests/a b.py", "$HOME"]
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "test.sh"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["-m", "pytest", *args]


def _renamed(function, name: str):
    """`function` with another code name, as a Lightning upgrade renaming a private method would leave it."""
    import types

    code = function.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)


def test_first_batch_failure_is_recognised_without_lightning_private_names(train, monkeypatch):
    from lightning.pytorch import Trainer

    from dtrain.config.errors import ConfigError

    monkeypatch.setattr(Trainer, "_run_sanity_check", _renamed(Trainer._run_sanity_check, "sanity_check_renamed"))
    wrong_net = ("model=cnn", "model.net.in_channels=3", "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match="fails on the first batch"):
        train(*wrong_net)
    # without a sanity check the failure comes in a training step: not a data/net mismatch message
    with pytest.raises(RuntimeError) as raised:
        train(*wrong_net, "trainer.num_sanity_val_steps=0")
    assert not isinstance(raised.value, ConfigError)


def test_dataloaders_pin_memory_for_cuda_only():
    from lightning.pytorch import Trainer
    from lightning.pytorch.accelerators import CUDAAccelerator

    from dtrain.data.digits import DigitsDataModule

    data = DigitsDataModule(batch_size=32)
    data.setup()
    data.trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert not data.val_dataloader().pin_memory
    data.trainer.strategy.accelerator = CUDAAccelerator()  # what a GPU run's trainer holds (constructing it needs no GPU)
    assert data.train_dataloader().pin_memory and data.val_dataloader().pin_memory


def test_diffusion_draws_its_noise_on_the_device(monkeypatch):
    """Every random tensor of a step and of sampling is drawn on the images' device (no
    host-to-device copy per step), and the fixed validation noise still repeats exactly."""
    from dtrain.nets.unet import UNet
    from dtrain.tasks.diffusion import Diffusion

    task = Diffusion(UNet(1, 8, channels=[8, 16], time_dim=16), functools.partial(torch.optim.AdamW), image_shape=[1, 8, 8], timesteps=50, sample_steps=3)
    draws = []
    for name in ("randn", "randint"):
        original = getattr(torch, name)

        def recording(*args, _original=original, **kwargs):
            draws.append((kwargs.get("device"), kwargs.get("generator")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, recording)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    task.noise_loss(x)
    fixed = [task.noise_loss(x, torch.Generator().manual_seed(3)).item() for _ in range(2)]
    task.sample(2, seed=1)
    assert draws and all(device is not None and torch.device(device) == x.device for device, _ in draws), draws
    assert all(generator is None or generator.device == x.device for _, generator in draws)
    assert fixed[0] == fixed[1]


def _decay_by_name(task) -> dict[str, float]:
    optimizer = task.configure_optimizers()
    by_id = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in task.named_parameters()}


def test_weight_decay_spares_biases_and_norm_weights_unless_asked():
    from types import SimpleNamespace

    from dtrain.tasks.classification import Classification
    from dtrain.tune.hyperparams import ApplyOptimizerConfig

    net = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    adamw = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1)
    decay = _decay_by_name(Classification(net, adamw, num_classes=2))
    assert decay == {"net.0.weight": 0.1, "net.1.weight": 0.0, "net.1.bias": 0.0, "net.2.weight": 0.1, "net.2.bias": 0.0}
    everything = _decay_by_name(Classification(net, adamw, num_classes=2, decay_norms_and_biases=True))
    assert set(everything.values()) == {0.1}
    # FSDP and ZeRO-3 flatten the same parameters into 1-d shards before the optimizer is made,
    # after dtrain's parallelize step (a callback's set-up) has looked at their whole shapes
    from dtrain.parallel.dims import ParallelDims
    from dtrain.parallel.parallelize import ParallelOptions, Parallelize

    sharded = Classification(copy.deepcopy(net), adamw, num_classes=2)
    Parallelize(ParallelDims(world=1), ParallelOptions()).setup(SimpleNamespace(strategy=None), sharded, "fit")
    for p in sharded.parameters():
        p.data = p.data.flatten()
    assert _decay_by_name(sharded) == decay
    # a PBT trial putting back its own weight decay leaves the biases and norms without
    optimizer = Classification(net, adamw, num_classes=2).configure_optimizers()
    ApplyOptimizerConfig(weight_decay=0.3).on_train_start(SimpleNamespace(lr_scheduler_configs=[], optimizers=[optimizer]), None)
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.3]


def test_learned_bpe_is_saved_with_the_run_and_reused(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from dtrain.config.compose import compose
    from dtrain.data.tokenizer import BytePairTokenizer
    from tests.test_text import PROSE, write_class_folders

    (tmp_path / "corpus.txt").write_text((PROSE * 20 + "def f(self):\n    return self.x\n\n") * 10)
    write_class_folders(tmp_path / "docs")
    runs = {
        "text": ["data=text_bpe", f"data.path={tmp_path / 'corpus.txt'}", "data.vocab_size=300"],
        "text_classes": ["data=text_classes", f"data.path={tmp_path / 'docs'}", "data.pattern=*.txt", "data.block_size=16", "data.vocab_size=300", "data.val_fraction=0.25", "data.test_fraction=0.25"],
    }
    first = {}
    for name, overrides in runs.items():
        run_dir = tmp_path / f"run-{name}"
        first[name] = instantiate(compose(overrides, run_dir=run_dir).data).splits
        assert (run_dir / "tokenizer.json").is_file(), name

    def learning_again(*args, **kwargs):
        raise AssertionError("a resumed run learned a new BPE instead of reusing its own")

    monkeypatch.setattr(BytePairTokenizer, "__init__", learning_again)
    for name, overrides in runs.items():
        again = instantiate(compose(overrides, run_dir=tmp_path / f"run-{name}").data).splits
        flat = lambda splits: [t for split in splits for t in (split if isinstance(split, tuple) else (split,))]  # noqa: E731
        assert all(torch.equal(a, b) for a, b in zip(flat(again), flat(first[name]), strict=True)), name


@pytest.mark.parametrize("model", ["dcgan", "wgan"])
def test_gan_on_other_images_monitors_the_critic_not_a_digits_score(train, tmp_path, model):
    """A user's RGB folder is no digits: no digits score, and the best checkpoint is chosen by
    the critic's divergence estimate, which is defined for any images."""
    from dtrain.generative_score import CLASSIFIER_FILE
    from tests.test_data_images import write_images

    folder = write_images(tmp_path / "imgs", per_class=16)
    metrics, run_dir = train(
        f"model={model}", "data=images", f"data.path={folder}", "data.image_size=8", "data.batch_size=8",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", f"paths.cache_dir={tmp_path / 'cache'}",
    )
    assert not any("digits" in key or "coverage" in key for key in metrics), metrics
    assert metrics["test/loss"] == metrics["test/critic_divergence"]
    assert not (tmp_path / "cache" / CLASSIFIER_FILE).exists()  # the digits classifier was never trained for these images
    assert list((run_dir / "checkpoints").glob("*.ckpt"))


def _random_inception_weights(path, monkeypatch):
    """torch-fidelity's InceptionV3 with random weights, saved where real ones would be: FID and
    KID run end to end without anything downloaded (the numbers mean nothing)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with monkeypatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path


def test_other_images_get_fid_and_kid_from_inception_weights_on_disk(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    from dtrain.generative_score import CLASSIFIER_FILE
    from dtrain.tasks.sample_scores import InceptionScore, SampleScores

    weights = _random_inception_weights(tmp_path / "inception.pt", monkeypatch)
    real = torch.rand(3, 3, 16, 16) * 2 - 1
    scores = SampleScores(cache_dir=str(tmp_path / "cache"), inception_weights=str(weights), num_samples=3)
    assert scores.scores("val", real) and scores.primary("val") == "fid"
    assert not (tmp_path / "cache" / CLASSIFIER_FILE).exists()  # no digits classifier for these images
    # digits without a cache dir, and other images without weights, are not scored
    assert not SampleScores(None, str(weights), 8).scores("val", torch.zeros(2, 1, 8, 8))
    assert not SampleScores(str(tmp_path), None, 8).scores("val", real)
    # the metrics themselves, on Inception's cheapest features (2048 costs minutes on a CPU)
    scores._scorers["val"] = InceptionScore(weights, kid_subset_size=3, features=64)
    scores.update_real("val", real)
    measured = scores.epoch_end(type("Trainer", (), {"sanity_checking": False})(), "val", lambda n, seed: torch.rand(n, 1, 16, 16) * 2 - 1)
    assert set(measured) == {"val/fid", "val/kid"} and all(torch.isfinite(v) for v in measured.values()), measured


def test_digits_score_refuses_other_images(tmp_path):
    from dtrain.generative_score import as_digits

    assert as_digits(torch.full((2, 1, 8, 8), 3.0)).max() == 1
    with pytest.raises(ValueError, match="1x8x8"):
        as_digits(torch.zeros(2, 3, 32, 32))
