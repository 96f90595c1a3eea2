"""The command line as a user meets it: help, composed config, the default run, plugging in
one's own code and data, and the README's DDP example with its bits-per-character bar."""

import csv
import re
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import dtrain_cli


def test_help_lists_groups_and_options(tmp_path):
    done = dtrain_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    for group, options in {"model": ["cnn", "mlp", "transformer"], "trainer": ["cpu", "ddp", "gpu"],
                           "data": ["digits", "tabular", "text"], "logger": ["csv", "wandb"],
                           "model/net": ["cnn", "transformer"], "budget": ["smoke"], "experiment": ["lm_stdlib_ddp"]}.items():
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{group}: "))
        assert all(option in line for option in options), line


def test_cfg_job_prints_the_composed_config_and_trains_nothing(tmp_path):
    done = dtrain_cli("model=mlp", "trainer=ddp", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0
    assert "_target_: dtrain.tasks.classification.Classification" in done.stdout
    assert "_target_: dtrain.data.tabular.TabularDataModule" in done.stdout  # the model's default data
    assert "strategy: ddp" in done.stdout
    assert not (tmp_path / "runs").exists()
    pinned = dtrain_cli("experiment=lm_stdlib_ddp", "--cfg", "job", cwd=tmp_path)
    assert "_target_: dtrain.tasks.language_model.LanguageModel" in pinned.stdout and "strategy: ddp" in pinned.stdout


def test_default_run_learns_digits_and_fills_its_run_directory(tmp_path):
    done = dtrain_cli(cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = float(re.search(r"^test/acc\s+([0-9.]+)$", done.stdout, re.M).group(1))
    assert accuracy >= 0.95
    run_dir = Path(re.search(r"^run directory: (.+)$", done.stdout, re.M).group(1))
    assert run_dir.parent.parent == tmp_path / "runs"
    for name in ("config.yaml", ".hydra/config.yaml", "checkpoints/last.ckpt", "metrics.csv", "env.json"):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("checkpoints/best-*.ckpt"))
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert "Epoch 0" in done.stdout  # progress as plain lines: stdout is not a terminal (dtrain.console.progress)


def test_users_own_net_and_module_plug_in_through_target(train, tmp_path, monkeypatch):
    (tmp_path / "my_code.py").write_text(textwrap.dedent("""
        import torch
        import lightning as L

        class TinyNet(torch.nn.Module):
            def __init__(self, in_channels, num_classes, image_size, **unused):
                super().__init__()
                self.linear = torch.nn.Linear(in_channels * image_size**2, num_classes)
            def forward(self, x):
                return self.linear(x.flatten(1))

        class MyModule(L.LightningModule):
            def __init__(self, net, optimizer, lr_scale=1.0, **unused):
                super().__init__()
                self.net, self.optimizer = net, optimizer
            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.cross_entropy(self.net(x), y)
            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val/loss", torch.nn.functional.cross_entropy(self.net(x), y))
            def test_step(self, batch, batch_idx):
                x, y = batch
                self.log("test/acc", (self.net(x).argmax(1) == y).float().mean())
            def configure_optimizers(self):
                return self.optimizer(params=self.parameters())
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = ["model.net._target_=my_code.TinyNet", "+model.net.image_size=${shapes.image_size}"]
    metrics, _ = train("model=cnn", *net, "trainer.max_epochs=3")
    assert metrics["test/acc"] > 0.8  # a linear model learned; chance is 0.1
    metrics, _ = train("model=cnn", *net, "model._target_=my_code.MyModule", "trainer.max_epochs=3")
    assert metrics["test/acc"] > 0.8  # a linear model learned; chance is 0.1


def test_users_own_text_folder(train, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    (corpus / "sub" / "b.txt").write_text("pack my box with five dozen liquor jugs! " * 200)
    (corpus / "skip.bin").write_bytes(bytes(range(256)) * 40)
    metrics, _ = train("model=transformer", f"data.path={corpus}", "data.pattern=*.txt", "budget=smoke")
    text = (corpus / "a.txt").read_bytes() + b"\n" + (corpus / "sub" / "b.txt").read_bytes()
    from collections import Counter
    from math import log2

    counts = Counter(text)
    entropy = -sum(c / len(text) * log2(c / len(text)) for c in counts.values())
    assert metrics["baseline/unigram_entropy_bits"] == pytest.approx(entropy, abs=1e-6)


@pytest.mark.slow
def test_readme_example_transformer_ddp_beats_unigram_entropy_by_a_bit(tmp_path):
    done = dtrain_cli("model=transformer", "trainer=ddp", cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    entropy = float(re.search(r"^baseline/unigram_entropy_bits\s+([0-9.]+)$", done.stdout, re.M).group(1))
    run_dir = Path(re.search(r"^run directory: (.+)$", done.stdout, re.M).group(1))
    val_bpc = [float(row["val/bpc"]) for row in csv.DictReader((run_dir / "metrics.csv").open()) if row["val/bpc"]]
    print(f"unigram entropy {entropy:.3f} bits; validation bits per char {val_bpc}")
    assert val_bpc[-1] <= entropy - 1.0
