"""A user's image folder (data=images): shapes, splits, and a model trained on it end to end."""

import numpy as np
import pytest
from PIL import Image


def write_images(root, classes=("cat", "dog"), per_class=10, size=(20, 14), mode="RGB"):
    """Small real PNG/JPEG files in class folders; each class has its own brightness."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (*size[::-1], 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_shapes_and_splits(tmp_path):
    from dtrain.data.images import ImageFolderDataModule

    data = ImageFolderDataModule(str(write_images(tmp_path / "imgs")), image_size=12, channels=1)
    assert data.shapes == {"in_channels": 1, "image_size": 12, "num_classes": 2, "num_outputs": 2, "num_features": 144}
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (14, 2, 4)
    x, y = data.train_set[0]
    assert x.shape == (1, 12, 12) and -1 <= x.min() and x.max() <= 1 and y in (0, 1)


def test_train_folder_subfolders(tmp_path):
    from dtrain.data.images import ImageFolderDataModule

    write_images(tmp_path / "imgs" / "train", classes=("a", "b", "c"), per_class=6)
    write_images(tmp_path / "imgs" / "val", classes=("a", "b", "c"), per_class=2)
    write_images(tmp_path / "imgs" / "test", classes=("a", "b", "c"), per_class=3, mode="L")
    data = ImageFolderDataModule(str(tmp_path / "imgs"), image_size=8)
    data.setup()
    assert data.shapes["num_classes"] == 3 and data.shapes["in_channels"] == 3
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (18, 6, 9)
    assert data.test_set[0][0].shape == (3, 8, 8)  # grey files become RGB


def test_a_folder_without_classes_is_a_config_error(tmp_path):
    from dtrain.config.errors import ConfigError
    from dtrain.data.images import ImageFolderDataModule

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.path"):
        ImageFolderDataModule(str(tmp_path / "empty"))


def test_cnn_learns_a_user_folder(train, tmp_path):
    """`data=images data.path=<folder>`: a CNN separates two classes of user images."""
    folder = write_images(tmp_path / "imgs", per_class=20)
    metrics, _ = train("model=cnn", "data=images", f"data.path={folder}", "data.image_size=8", "data.batch_size=8", "trainer.max_epochs=5")
    assert metrics["test/acc"] == 1.0
