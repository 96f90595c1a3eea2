"""torchvision classifiers (resnet, densenet, mobilenet, efficientnet, inception) on digits."""

import pytest

from tests.bars import stop_at
from tests.learning import PROBE, learned

FAMILIES = ["resnet", "densenet", "mobilenet", "efficientnet", "inception"]


@pytest.mark.parametrize("model", FAMILIES)
def test_smoke(train, model):
    """Each family's default config trains a few steps, validates and tests end to end, and the
    steps reach every weight (a frozen or detached part, or no optimizer step, leaves some as
    they were). Whether it learns is its bar test's: in 3 steps of 8 images the held-out loss of
    these batch-norm nets moves by their running statistics alone (resnet 2.383 -> 2.338 at
    lr=1e-9, 2.333 at its own lr), so it tells nothing here."""
    size = ["data.image_size=16"] if model != "inception" else []  # inception's minimum is its default, 75
    metrics, run_dir = train(f"model={model}", "budget=smoke", "data.batch_size=8", *size, PROBE)
    learned(run_dir, fall=None)
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and "test/acc" in metrics


def test_net_swaps_inside_the_task(train):
    """`model/net=` swaps the net inside a task: the resnet task with the densenet net."""
    metrics, run_dir = train("model=resnet", "model/net=densenet", "budget=smoke", "data.batch_size=8")
    assert "test/acc" in metrics
    assert "family: densenet" in (run_dir / "config.yaml").read_text()


def test_inception_refuses_small_images():
    from dtrain.nets.vision import VisionNet

    with pytest.raises(ValueError, match="at least 75"):
        VisionNet("inception", 1, 10, image_size=32)


# The bars: each model's default config, stopped at the first validation 0.03 above the bar
# (digits test split: 360 images never trained on).
BARS = {"resnet": 0.95, "densenet": 0.9, "mobilenet": 0.9, "efficientnet": 0.9, "inception": 0.9}


@pytest.mark.bars
@pytest.mark.parametrize("model", FAMILIES)
def test_bar(train, record_bar, model):
    metrics, _ = train(f"model={model}", *stop_at("val/acc", BARS[model] + 0.03))
    record_bar("test/acc", metrics["test/acc"], BARS[model])
    assert metrics["test/acc"] >= BARS[model], metrics
