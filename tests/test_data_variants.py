"""Smoke runs of data/model variants nobody ran before: a VAE on a user's image folder, and the
convolutional autoencoder."""

import numpy as np
import pytest
from PIL import Image


def write_class_folders(root, classes=("a", "b"), per_class=12, size=10):
    """Tiny RGB PNGs in class folders; each class has its own brightness."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_vae_on_a_user_image_folder(train, tmp_path):
    """`model=vae data=images data.path=<folder> data.channels=1 data.image_size=8 budget=smoke`:
    fits, tests, and saves sample and interpolation grids (without the digits-classifier score,
    which means nothing for a user's own images)."""
    folder = write_class_folders(tmp_path / "imgs")
    metrics, run_dir = train(
        "model=vae", "data=images", f"data.path={folder}", "data.channels=1", "data.image_size=8", "budget=smoke",
        "model.cache_dir=null", "data.batch_size=8",
    )
    assert metrics["test/elbo"] < 0 and metrics["test/loss"] > 0
    grids = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert "samples-test.png" in grids and "interpolation-test.png" in grids, grids


@pytest.mark.slow
def test_vae_with_an_empty_classifier_cache(train, tmp_path):
    """The same run as a user's first one: no digits classifier cached yet, so it is trained on
    first use, which comes inside Lightning's validation (inference mode); it used to fail there
    with "element 0 of tensors does not require grad". About 30 s: the classifier's 15 epochs."""
    folder = write_class_folders(tmp_path / "imgs")
    from dtrain.generative_score import CLASSIFIER_FILE

    cache = tmp_path / "empty_cache"
    metrics, _ = train(
        "model=vae", "data=images", f"data.path={folder}", "data.channels=1", "data.image_size=8", "budget=smoke",
        f"paths.cache_dir={cache}", "data.batch_size=8",
    )
    assert 0 <= metrics["test/class_coverage"] <= 10 and metrics["test/frechet_digits_distance"] >= 0
    assert (cache / CLASSIFIER_FILE).is_file()  # cached for the next run


def test_conv_autoencoder(train):
    """`model=autoencoder model.net.kind=conv budget=smoke`: the conv variant runs end to end and
    scores the held-out digit by reconstruction error."""
    metrics, _ = train("model=autoencoder", "model.net.kind=conv", "budget=smoke")
    assert metrics["test/loss"] > 0 and 0 <= metrics["test/auroc"] <= 1
