"""Autoencoder (anomaly detection), VAE, DCGAN, WGAN-GP and DDPM on digits, and the digits
classifier that scores generated samples."""

import os

import pytest
import torch

from tests.bars import stop_at


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """A cache dir holding the digits classifier, trained once per test session."""
    from dtrain.generative_score import digits_classifier

    cache = tmp_path_factory.mktemp("cache")
    digits_classifier(cache)
    return cache


def test_classifier_is_cached_atomically_and_reused(digits_cache):
    from dtrain.generative_score import CLASSIFIER_FILE, digits_classifier

    path = digits_cache / CLASSIFIER_FILE
    saved = torch.load(path, weights_only=True)
    assert saved["test_accuracy"] >= 0.95
    mtime = path.stat().st_mtime_ns
    digits_classifier(digits_cache)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    assert [p.name for p in digits_cache.iterdir()] == [CLASSIFIER_FILE]  # no temp file left behind


def test_score_tells_real_digits_from_noise_and_from_missing_classes(digits_cache):
    """The score the generative bars rest on can fail: noise and five-class samples do."""
    from dtrain.data.digits import DigitsDataModule
    from dtrain.generative_score import SampleScore

    data = DigitsDataModule()
    data.setup()
    (test_x, _), (train_x, train_y) = data.test_set.tensors, data.train_set.tensors
    score = SampleScore(digits_cache)

    def judge(fake):
        score.update_real(test_x)
        score.update_fake(fake)
        return {k: float(v) for k, v in score.compute().items()}

    real = judge(train_x)
    noise = judge(torch.rand(1000, 1, 8, 8) * 2 - 1)
    half = judge(train_x[train_y < 5])
    assert real["class_coverage"] == 10
    assert noise["class_coverage"] < 8 and half["class_coverage"] == 5
    assert real["frechet_digits_distance"] * 10 < half["frechet_digits_distance"] < noise["frechet_digits_distance"]


GENERATIVE = ["autoencoder", "vae", "dcgan", "wgan", "diffusion"]
SMOKE_EXTRA = {"diffusion": ["model.sample_steps=5", "model.num_score_samples=50"]}


@pytest.mark.parametrize("model", GENERATIVE)
def test_smoke(train, digits_cache, model):
    """Each generative model's default config runs a few steps end to end; those that generate
    save PNG sample grids in <run>/samples/ and report the classifier's scores."""
    metrics, run_dir = train(f"model={model}", "budget=smoke", f"paths.cache_dir={digits_cache}", *SMOKE_EXTRA.get(model, []))
    assert "test/loss" in metrics
    if model == "autoencoder":
        assert 0 <= metrics["test/auroc"] <= 1
        return
    grids = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert "samples-test.png" in grids, grids
    assert 0 <= metrics["test/class_coverage"] <= 10 and metrics["test/frechet_digits_distance"] >= 0
    if model == "vae":
        assert "interpolation-test.png" in grids
        assert metrics["test/elbo"] < 0


def test_grids_are_logged_to_wandb(train, digits_cache):
    """With a WandbLogger among the loggers, sample grids are logged as W&B images."""
    _, run_dir = train("model=dcgan", "budget=smoke", f"paths.cache_dir={digits_cache}", "logger=[csv,wandb]")
    media = list((run_dir / "wandb").rglob("*.png"))
    assert media, "no W&B image files"


# -- the bars: default configs, stopped at the first validation past the bar -----------------
@pytest.mark.bars
def test_autoencoder_flags_the_held_out_digit(train, record_bar):
    metrics, _ = train("model=autoencoder", *stop_at("val/auroc", 0.9))
    record_bar("test/auroc", metrics["test/auroc"], 0.8)
    assert metrics["test/auroc"] >= 0.8, metrics


@pytest.mark.bars
def test_vae_elbo_improves_and_saves_grids(train, digits_cache, record_bar):
    untrained, _ = train("model=vae", "trainer.limit_train_batches=0", f"paths.cache_dir={digits_cache}")
    trained, run_dir = train("model=vae", f"paths.cache_dir={digits_cache}")
    # nats per image; the untrained decoder is near log(2) per pixel (about -44)
    record_bar("test/elbo", trained["test/elbo"], untrained["test/elbo"] + 10)
    assert trained["test/elbo"] > untrained["test/elbo"] + 10, (untrained, trained)
    grids = {p.name for p in (run_dir / "samples").glob("*.png")}
    assert {"samples-test.png", "interpolation-test.png"} <= grids


@pytest.mark.bars
@pytest.mark.parametrize("model", ["dcgan", "wgan", "diffusion"])
def test_samples_cover_the_digits(train, digits_cache, record_bar, model):
    # validation and test score the same seeded samples; stopping at 9 leaves a class of margin
    # for a best checkpoint (lowest val/loss) other than the last one
    metrics, run_dir = train(f"model={model}", f"paths.cache_dir={digits_cache}", *stop_at("val/class_coverage", 9))
    record_bar("test/class_coverage", metrics["test/class_coverage"], 8)
    assert metrics["test/class_coverage"] >= 8, metrics
    assert (run_dir / "samples" / "samples-test.png").exists()
