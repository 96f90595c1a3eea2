"""data=torchvision: torchvision's datasets read from files on disk in torchvision's own formats
(written here, tiny), never downloaded; shapes, splits, a CNN run end to end, one-line errors."""

import pickle

import numpy as np
import pytest
import torch

from tests.conftest import dtrain_cli

TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


def write_idx(path, array: np.ndarray) -> None:
    """An idx (ubyte) file as MNIST ships it: magic 0x0000 08 <ndim>, big-endian sizes, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, name="MNIST", size=28):
    """`<root>/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`; class c's images are a
    bright bar at row 2c (learnable, and pixel 0 / 255 are checkable)."""
    for prefix, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(10), per_class)
        images = np.zeros((len(labels), size, size), np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 2] = 255
        write_idx(root / name / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / name / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def test_shapes_before_setup_class_count_and_splits(tmp_path):
    from dtrain.data.torchvision_datasets import TorchvisionDataModule

    data = TorchvisionDataModule("MNIST", str(write_mnist(tmp_path)), val_fraction=0.1)
    assert data.shapes == {"in_channels": 1, "image_size": 28, "num_classes": 10, "num_outputs": 10, "num_features": 784}
    assert data.train_set is None  # known without reading the images
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (90, 10, 30)
    val_labels = sorted(data.val_set[i][1] for i in range(len(data.val_set)))
    assert val_labels == list(range(10))  # stratified: one of each class
    train_idx, val_idx = set(data.train_set.indices.tolist()), set(data.val_set.indices.tolist())
    assert not train_idx & val_idx and len(train_idx | val_idx) == 100  # carved from the official train split
    test_labels = [data.test_set[i][1] for i in range(len(data.test_set))]
    assert np.bincount(test_labels).tolist() == [TEST_PER_CLASS] * 10  # the official test split
    x, y = data.test_set[0]
    assert x.shape == (1, 28, 28) and x.min() == -1 and x.max() == 1
    assert torch.all(x[0, 2 * y : 2 * y + 2] == 1) and (x == 1).sum() == 2 * 28


def test_fashion_mnist_as_rgb_at_another_size(tmp_path):
    from dtrain.data.torchvision_datasets import TorchvisionDataModule

    data = TorchvisionDataModule("FashionMNIST", str(write_mnist(tmp_path, "FashionMNIST")), image_size=16, channels=3)
    assert data.shapes["in_channels"] == 3 and data.shapes["num_features"] == 3 * 16 * 16
    data.setup()
    x, _ = data.train_set[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey copied to each channel


def test_old_processed_mnist_files_are_read_too(tmp_path):
    """Older torchvision versions kept MNIST as <root>/MNIST/processed/{training,test}.pt; the
    installed one still reads them, so they are not reported missing."""
    from dtrain.data.torchvision_datasets import TorchvisionDataModule

    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for file, n in (("training.pt", 20), ("test.pt", 10)):
        torch.save((torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n) % 10), processed / file)
    data = TorchvisionDataModule("MNIST", str(tmp_path), val_fraction=0.5)
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (10, 10, 10)


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    from dtrain.config.errors import ConfigError
    from dtrain.data.torchvision_datasets import TorchvisionDataModule

    write_mnist(tmp_path)
    with pytest.raises(ConfigError, match=r"data.name: Mnist .*did you mean MNIST\? choose one of: MNIST, FashionMNIST"):
        TorchvisionDataModule("Mnist", str(tmp_path))
    with pytest.raises(ConfigError, match="data.name: torchvision.datasets.CelebA has no official train/test split with a class label"):
        TorchvisionDataModule("CelebA", str(tmp_path))
    with pytest.raises(ConfigError, match="data.root: required"):
        TorchvisionDataModule("MNIST", None)
    with pytest.raises(ConfigError, match="KMNIST files missing: .*/KMNIST/raw/train-images-idx3-ubyte.*never downloads"):
        TorchvisionDataModule("KMNIST", str(tmp_path))  # MNIST's files are there, KMNIST's are not
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match=r"MNIST files missing: \S+/MNIST/raw/t10k-labels-idx1-ubyte;"):
        TorchvisionDataModule("MNIST", str(tmp_path))


def test_cifar_files_torchvision_does_not_recognise_are_a_config_error(tmp_path):
    """CIFAR10 batches in the right pickle format but not the originals: torchvision checks each
    file's md5, so they are refused (a test cannot write files that pass), with a one-line error."""
    from dtrain.config.errors import ConfigError
    from dtrain.data.torchvision_datasets import TorchvisionDataModule

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    data = TorchvisionDataModule("CIFAR10", str(tmp_path))
    assert data.shapes == {"in_channels": 3, "image_size": 32, "num_classes": 10, "num_outputs": 10, "num_features": 3072}
    with pytest.raises(ConfigError, match="data.root: torchvision cannot read CIFAR10 .*corrupted.*never downloads"):
        data.setup()


def test_cnn_trains_and_tests_on_mnist_files(train, tmp_path):
    """`model=cnn data=torchvision data.root=<dir> budget=smoke`: fit, then test on the official
    test split; the net was built for 1 channel and 10 classes."""
    write_mnist(tmp_path / "data")
    metrics, run_dir = train("model=cnn", "data=torchvision", f"data.root={tmp_path / 'data'}", "budget=smoke", "data.batch_size=30")
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/loss"] > 0
    checkpoint = sorted(run_dir.rglob("*.ckpt"))[0]
    weights = [w for k, w in torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"].items() if w.ndim >= 2]
    assert weights[0].shape[1] == 1 and weights[-1].shape[0] == 10  # first conv takes 1 channel, head gives 10 classes


def test_missing_files_end_in_one_line(tmp_path):
    """No files under data.root: exit status 2, one line naming data.root, where torchvision
    expects the files and that dtrain never downloads; no traceback, and no run directory left."""
    (tmp_path / "data").mkdir()
    done = dtrain_cli("model=cnn", "data=torchvision", f"data.root={tmp_path / 'data'}", "budget=smoke", "logger=[csv]", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("dtrain: error: data.root: MNIST files missing: "), done.stderr[-2000:]
    assert f"{tmp_path / 'data'}/MNIST/raw/train-images-idx3-ubyte" in done.stderr and "never downloads" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*")), sorted(runs.rglob("*"))  # nothing left behind
