"""`python -m dtrain.plan` with a LightningModule and a LightningDataModule written for plain
Lightning (tests/test_own_lightning.py's): the plan counts the user's own module, takes its input
and micro-batch from the datamodule's first training batch, and says so in one warning line."""

import pytest

from dtrain.config.compose import compose
from dtrain.plan import make_plan
from tests.test_own_lightning import overrides, own_package

HIDDEN = 64


def plain_plan(tmp_path, monkeypatch, capsys, *more):
    code, data_dir = own_package(tmp_path)
    monkeypatch.syspath_prepend(str(code))
    plan = make_plan(compose([*overrides(data_dir), f"+model.hidden={HIDDEN}", *more], run_dir=tmp_path / "run"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plan:")]
    return plan, warnings


def test_plan_of_plain_lightning_code_counts_the_users_module(tmp_path, monkeypatch, capsys):
    plan, warnings = plain_plan(tmp_path, monkeypatch, capsys, "trainer=cpu")

    import my_lightning  # the user's package, as written to disk

    weights = sum(p.numel() for p in my_lightning.LitClassifier(optimizer=None, hidden=HIDDEN).parameters())
    assert plan.params == weights == 28 * 28 * HIDDEN + HIDDEN + HIDDEN * 10 + 10
    # two linear layers, 2 FLOPs a multiply-add: forward, the weight gradients, and the input
    # gradient of the second layer only (the images need none)
    first, second = 28 * 28 * HIDDEN, HIDDEN * 10
    assert plan.flops_per_sample == pytest.approx(2 * (first + second) + 2 * (first + second) + 2 * second, rel=0.01)
    assert plan.micro_batch == 16  # the datamodule's own batch_size
    assert plan.device_bytes["weights"] == 4 * weights and plan.device_bytes["activations"] > 0
    assert len(warnings) == 1, warnings
    assert "my_lightning.MNISTDataModule is not a dtrain DataModule" in warnings[0]
    assert "micro-batch" in warnings[0] and "unknown" not in warnings[0]
    assert "micro-batch 16 per device" in plan.report()


def test_under_ddp_each_rank_loads_the_datamodules_whole_batch(tmp_path, monkeypatch, capsys):
    # Lightning's DistributedSampler gives each rank its share of the samples, not of the batch
    plan, warnings = plain_plan(tmp_path, monkeypatch, capsys, "trainer=ddp")
    assert plan.devices == 2 and plan.micro_batch == 16 and len(warnings) == 1


def test_a_datamodule_that_cannot_load_here_still_gets_a_plan(tmp_path, monkeypatch, capsys):
    # no MNIST files where data_dir points (a plan calls no prepare_data: it downloads nothing)
    plan, warnings = plain_plan(tmp_path, monkeypatch, capsys, "trainer=cpu", f"data.data_dir={tmp_path / 'nowhere'}")
    assert plan.params == 28 * 28 * HIDDEN + HIDDEN + HIDDEN * 10 + 10
    assert plan.flops_per_sample is None and plan.micro_batch == 16
    assert len(warnings) == 1 and "FLOPs and activations unknown" in warnings[0], warnings
    report = plan.report()
    assert "FLOPs per sample      unknown" in report and "weights" in report


def test_dtrains_own_net_on_plain_data_needs_the_sizes_given(tmp_path, monkeypatch):
    # the default model (the digits CNN) asks for ${shapes.in_channels} and more, which plain data lacks:
    # one line naming the key, as the run itself says
    from dtrain.config.errors import ConfigError

    code, data_dir = own_package(tmp_path)
    monkeypatch.syspath_prepend(str(code))
    data_only = [o for o in overrides(data_dir) if o.startswith(("data.", "+data."))]
    with pytest.raises(ConfigError, match=r"model.net: .*shapes\.\w+.* gives no shapes"):
        make_plan(compose([*data_only, "trainer=cpu"], run_dir=tmp_path / "run"))
    given = make_plan(compose([*data_only, "trainer=cpu", "model.num_classes=10", "model.net.num_classes=10", "model.net.in_channels=1"],
                              run_dir=tmp_path / "run"))
    assert given.params > 0 and given.flops_per_sample > 0 and given.micro_batch == 16
