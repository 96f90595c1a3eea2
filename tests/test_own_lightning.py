"""A LightningModule and a LightningDataModule written for plain Lightning (the way Lightning's
own documentation writes them) train under dtrain by config alone, in one process and under DDP,
where Lightning's DistributedSampler gives each rank its own share of the data."""

import csv
import logging
import struct
import textwrap
from pathlib import Path

import numpy as np

from tests.conftest import REPO, dtrain_cli

TRAIN_IMAGES, TEST_IMAGES, TRAIN_SPLIT = 256, 64, 224

# Lightning's documented MNISTDataModule (torchvision's MNIST reads the idx files; nothing is
# downloaded when they are there), a LightningModule in the lightning-hydra-template's manner
# (its own torchmetrics, optimizer and scheduler as Hydra partials), and a callback that writes
# down which samples each rank trained on.
PACKAGE = '''
import hashlib
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchmetrics import Accuracy
from torchvision import transforms
from torchvision.datasets import MNIST


class MNISTDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str = "./", batch_size: int = 32):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def prepare_data(self):
        MNIST(self.data_dir, train=True, download=True)
        MNIST(self.data_dir, train=False, download=True)

    def setup(self, stage: str):
        if stage == "fit":
            mnist_full = MNIST(self.data_dir, train=True, transform=self.transform)
            self.mnist_train, self.mnist_val = random_split(
                mnist_full, [{train}, {val}], generator=torch.Generator().manual_seed(42)
            )
        if stage == "test":
            self.mnist_test = MNIST(self.data_dir, train=False, transform=self.transform)

    def train_dataloader(self):
        return DataLoader(self.mnist_train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.mnist_val, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.mnist_test, batch_size=self.batch_size)


class LitClassifier(L.LightningModule):
    def __init__(self, optimizer, scheduler=None, hidden: int = 64, num_classes: int = 10):
        super().__init__()
        # The partials stay out of the checkpoint: torch's weights-only load refuses them (a
        # template module that stores them is issue 11's, item 4).
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.val_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", nn.functional.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return {{"optimizer": optimizer}}
        scheduler = self.scheduler(optimizer=optimizer)
        return {{"optimizer": optimizer, "lr_scheduler": {{"scheduler": scheduler, "interval": "epoch"}}}}


class SeenSamples(L.Callback):
    """<run>/seen/rank<r>.txt: one line `epoch sha1` per training sample this rank saw."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        path = Path(trainer.default_root_dir) / "seen" / f"rank{{trainer.global_rank}}.txt"
        path.parent.mkdir(exist_ok=True)
        with path.open("a") as seen:
            for image in batch[0]:
                seen.write(f"{{trainer.current_epoch}} {{hashlib.sha1(image.numpy().tobytes()).hexdigest()}}\\n")
'''.format(train=TRAIN_SPLIT, val=TRAIN_IMAGES - TRAIN_SPLIT)

WARNING = "is not a dtrain DataModule"


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic 2051 (images) or 2049 (labels), big-endian sizes, then bytes."""
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(f">{array.ndim + 1}i", magic, *array.shape) + array.astype(np.uint8).tobytes())


def squares(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28x28 images with a bright 7x7 square whose place (one of 10 cells) is the label."""
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 80, (count, 28, 28))
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 4)
        image[row * 7 + 2 : row * 7 + 9, col * 7 : col * 7 + 7] = rng.integers(180, 256, (7, 7))
    return images, labels


def own_package(tmp_path: Path) -> tuple[Path, Path]:
    """The user's package and MNIST files: (folder to put on the path, data_dir)."""
    code = tmp_path / "code"
    (code / "my_lightning").mkdir(parents=True)
    (code / "my_lightning" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", TRAIN_IMAGES), ("t10k", TEST_IMAGES)):
        images, labels = squares(count, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return code, tmp_path / "mnist"


def overrides(data_dir: Path) -> list[str]:
    return [
        "data._target_=my_lightning.MNISTDataModule", f"+data.data_dir={data_dir}", "data.batch_size=16",
        "model._target_=my_lightning.LitClassifier", "+model.scheduler._target_=torch.optim.lr_scheduler.StepLR",
        "+model.scheduler._partial_=true", "+model.scheduler.step_size=2",
    ]


def test_own_module_and_datamodule_train_in_one_process(train, tmp_path, monkeypatch, caplog):
    code, data_dir = own_package(tmp_path)
    monkeypatch.syspath_prepend(str(code))
    with caplog.at_level(logging.WARNING):
        metrics, run_dir = train(*overrides(data_dir), "trainer.max_epochs=4")

    assert metrics["test/acc"] > 0.6, metrics  # chance is 0.1
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and list((run_dir / "checkpoints").glob("best-*.ckpt"))
    val_acc = [float(row["val/acc"]) for row in csv.DictReader((run_dir / "metrics.csv").open()) if row.get("val/acc")]
    assert len(val_acc) == 4 and val_acc[-1] > 0.6
    warnings = [record.getMessage() for record in caplog.records if WARNING in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert "no ${shapes.*} or baselines" in warnings[0] and "data.image_size" in warnings[0] and "model.net" in warnings[0]
    saved = (run_dir / "config.yaml").read_text()
    assert "image_size" not in saved and "ConvNet" not in saved  # dtrain's digits and cnn keys left out


def test_own_datamodule_under_ddp_gives_each_rank_its_own_samples(tmp_path):
    code, data_dir = own_package(tmp_path)
    run_dir = tmp_path / "ddp"
    done = dtrain_cli(
        *overrides(data_dir), "trainer=ddp", "trainer.max_epochs=2", "+callbacks.seen._target_=my_lightning.SeenSamples",
        "logger=[csv]", "trainer.enable_progress_bar=false", cwd=tmp_path,
        env={"DTRAIN_RUN_DIR": str(run_dir), "PYTHONPATH": f"{code}:{REPO}"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count(WARNING) == 1  # rank 0 says it, once

    seen = {}
    for rank in (0, 1):
        for line in (run_dir / "seen" / f"rank{rank}.txt").read_text().split("\n"):
            if line:
                epoch, digest = line.split()
                seen.setdefault((rank, int(epoch)), set()).add(digest)
    for epoch in (0, 1):
        rank0, rank1 = seen[0, epoch], seen[1, epoch]
        assert not rank0 & rank1, f"epoch {epoch}: both ranks trained on the same samples"
        assert len(rank0 | rank1) == TRAIN_SPLIT  # together, the whole training split
    assert seen[0, 0] != seen[0, 1]  # Lightning's sampler reshuffles every epoch
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_only_keys_the_users_class_cannot_take_are_left_out(tmp_path, monkeypatch):
    from dtrain.config.compose import compose
    from dtrain.config.user_targets import leave_out_foreign_keys

    (tmp_path / "my_classes.py").write_text(textwrap.dedent("""
        class Data:
            def __init__(self, batch_size, **options): ...
        class Module:
            def __init__(self, optimizer, num_classes): ...
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose(["data._target_=my_classes.Data", "model._target_=my_classes.Module", "+model.typo=1"], run_dir=tmp_path)
    assert leave_out_foreign_keys(cfg) == ["model.net", "model.typo"]  # named in the warning line
    assert "image_size" in cfg.data  # **options takes anything
    # no shapes and no default for num_classes: kept, so the run stops on it in one line
    assert leave_out_foreign_keys(cfg, shapes={}) == [] and "num_classes" in cfg.model


def test_lightning_sampler_gives_the_stages_of_one_pipeline_replica_the_same_share(monkeypatch):
    import torch
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from dtrain.parallel.pipeline import Pipeline

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # set_global_rank sets it: later runs here are rank 0
    environment = LightningEnvironment()
    environment.set_world_size(4)
    environment.set_global_rank(3)  # the second stage of the second replica
    strategy = Pipeline(stages=2, parallel_devices=[torch.device("cpu")] * 4, cluster_environment=environment)
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 1}
