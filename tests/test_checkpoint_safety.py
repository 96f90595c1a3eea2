"""A checkpoint file someone planted in a run directory never runs its code: the resume picker
skips it with one warning and resumes from the newest safe checkpoint, `+model.init_from=` refuses
it in one line, and the pickles inside sharded (DeepSpeed, torch-DCP) folders are checked before
their loaders unpickle them fully; a PBT donor's checkpoint that would run code is skipped and the
trial goes on from its own. Only `runtime.trust_checkpoints=true` on the command line loads
such a file. dtrain's own checkpoints load weights-only, even from a module that stores its
`nn.Module` with `save_hyperparameters()`."""

import logging
import pathlib
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from dtrain.checkpoints import UnsafeCheckpoint, check_safe, newest_valid_checkpoint
from tests.conftest import dtrain_cli

FIRST_RUN = ("model=mlp", "budget=smoke", "seed=3")  # 3 steps of breast-cancer data (6 a full epoch)


class Planted:
    """Unpickling this creates `marker`: what any code in a checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path, like: Path | None = None) -> Path:
    """A checkpoint at `path` (a copy of `like`'s contents, so that a loader taking it gets on
    with it) claiming the highest step, with code that creates `marker` when unpickled."""
    checkpoint = torch.load(like, map_location="cpu", weights_only=True) if like else {"state_dict": {}, "loops": {}}
    torch.save({**checkpoint, "global_step": 10**6, "planted": Planted(marker)}, path)
    return path


def runs_code_when_unpickled(path: Path, marker: Path) -> bool:
    """The premise, checked: a full (weights_only=False) load of the file, as the loaders before
    this fix did, does create the marker (which is then removed again)."""
    assert not marker.exists()
    torch.load(path, map_location="cpu", weights_only=False)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


@pytest.fixture
def finished_run(train, tmp_path) -> Path:
    """A real run of 3 steps whose last.ckpt is kept as step3.ckpt, and a planted last.ckpt in its place."""
    _, run_dir = train(*FIRST_RUN, run_dir=tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "last.ckpt").rename(checkpoints / "step3.ckpt")
    plant(checkpoints / "last.ckpt", tmp_path / "marker", like=checkpoints / "step3.ckpt")
    return run_dir


def test_resume_skips_a_planted_checkpoint_and_continues_from_the_newest_safe_one(finished_run, tmp_path):
    marker, planted = tmp_path / "marker", finished_run / "checkpoints" / "last.ckpt"
    assert runs_code_when_unpickled(planted, marker)
    # Whoever planted the file may have edited config.yaml too: a saved trust is not trust.
    config = finished_run / "config.yaml"
    config.write_text(config.read_text().replace("trust_checkpoints: false", "trust_checkpoints: true"))
    assert "trust_checkpoints: true" in config.read_text()

    resumed = dtrain_cli(f"resume={finished_run}", "trainer.max_steps=6", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists(), "the planted checkpoint ran its code"
    warnings = [line for line in (resumed.stdout + resumed.stderr).splitlines() if str(planted) in line]
    assert len(warnings) == 1 and "would run code" in warnings[0] and "runtime.trust_checkpoints=true" in warnings[0], warnings
    run_log = (finished_run / "run.log").read_text()
    assert f"Restoring states from the checkpoint path at {finished_run / 'checkpoints' / 'step3.ckpt'}" in run_log
    assert torch.load(planted, map_location="cpu", weights_only=True)["global_step"] == 6  # the run's own last.ckpt again


def test_trust_checkpoints_on_the_command_line_loads_the_planted_file(finished_run, tmp_path):
    marker = tmp_path / "marker"
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    resumed = dtrain_cli(f"resume={copy}", "trainer.max_steps=6", "runtime.trust_checkpoints=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert marker.exists(), "runtime.trust_checkpoints=true must load the file fully"
    assert "would run code" not in resumed.stdout + resumed.stderr


def test_a_planted_best_checkpoint_is_not_loaded_for_the_test_stage(train, tmp_path, caplog):
    """A safe checkpoint can still name another file as the best one: Lightning restores that
    path and the test stage would load it (a DeepSpeed or DCP folder's loader fully)."""
    from dtrain.__main__ import resume

    marker = tmp_path / "marker"
    _, run_dir = train(*FIRST_RUN, run_dir=tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    planted = plant(checkpoints / "best-planted.ckpt", marker)
    checkpoint = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    (key,) = [k for k, state in checkpoint["callbacks"].items() if state.get("monitor") == "val/loss"]
    best = torch.tensor(-1e9)  # no validation of the resumed run beats it
    checkpoint["callbacks"][key].update(best_model_path=str(planted), best_model_score=best, best_k_models={str(planted): best},
                                        kth_best_model_path=str(planted), kth_value=best)
    torch.save(checkpoint, checkpoints / "last.ckpt")

    with caplog.at_level(logging.WARNING):
        resume(str(run_dir), ["trainer.max_steps=6"])
    assert not marker.exists()
    warnings = [r.getMessage() for r in caplog.records if str(planted) in r.getMessage()]
    # The picker skipped it too (it claims the highest step), then the test stage refused it.
    assert len(warnings) == 2 and warnings[0].startswith("skipped checkpoint"), warnings
    assert "testing the weights in memory" in warnings[1], warnings


def test_init_from_refuses_a_planted_checkpoint_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    planted = plant(tmp_path / "planted.ckpt", marker)
    assert runs_code_when_unpickled(planted, marker)
    refused = dtrain_cli(*FIRST_RUN, "logger=[csv]", f"+model.init_from={planted}", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith("dtrain: error: model.init_from: refused:") and str(planted) in lines[-1], lines[-3:]
    assert "Traceback" not in refused.stderr and "runtime.trust_checkpoints=true" in lines[-1]
    assert not marker.exists()


def test_init_from_with_trust_loads_the_file(tmp_path):
    marker = tmp_path / "marker"
    planted = plant(tmp_path / "planted.ckpt", marker)
    done = dtrain_cli(*FIRST_RUN, "logger=[csv]", f"+model.init_from={planted}", "runtime.trust_checkpoints=true", cwd=tmp_path)
    assert marker.exists(), done.stderr[-2000:]
    assert done.returncode == 2 and "holds no weight matching" in done.stderr  # it was opened: it has no weights


def test_init_from_a_file_torch_did_not_write_is_one_line(tmp_path):
    from dtrain.config.errors import ConfigError
    from dtrain.tasks.base import load_matching_weights

    garbage = tmp_path / "notes.ckpt"
    garbage.write_bytes(f"cos\nsystem\n(S'touch {tmp_path / 'x'}'\ntR.".encode())  # a pickle, in neither of torch.save's formats
    import pickle

    pickle.loads(garbage.read_bytes())  # the premise: unpickled, it runs
    assert (tmp_path / "x").exists()
    (tmp_path / "x").unlink()
    with pytest.raises(ConfigError, match="is not a file torch.save wrote"):
        load_matching_weights(torch.nn.Linear(2, 2), str(garbage))
    assert not (tmp_path / "x").exists()


def test_trust_must_be_a_boolean(tmp_path):
    refused = dtrain_cli(*FIRST_RUN, "runtime.trust_checkpoints=yes", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == "dtrain: error: runtime.trust_checkpoints: expected true or false, got 'yes'"


def test_an_old_format_pickle_is_checked_too(tmp_path, caplog):
    """torch maps only its zip format into memory; a file in the old format is still checked."""
    marker = tmp_path / "marker"
    planted = tmp_path / "run" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "loops": {}, "global_step": 1, "planted": Planted(marker)}, planted, _use_new_zipfile_serialization=False)
    assert runs_code_when_unpickled(planted, marker)
    with caplog.at_level(logging.WARNING):
        assert newest_valid_checkpoint(tmp_path / "run") is None
    assert [r.getMessage() for r in caplog.records if str(planted) in r.getMessage()], "skipped without a word"
    assert not marker.exists()


# Sharded checkpoints: the pickles their own loaders open with weights_only=False.

def test_deepspeed_folder_with_a_planted_state_file_is_skipped(tmp_path, caplog):
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints" / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    states = plant(folder / "checkpoint" / "mp_rank_00_model_states.pt", marker)
    assert runs_code_when_unpickled(states, marker)  # as DeepSpeed's TorchCheckpointEngine loads it
    with caplog.at_level(logging.WARNING):
        assert newest_valid_checkpoint(run_dir) is None
    warnings = [r.getMessage() for r in caplog.records if "would run code" in r.getMessage()]
    assert len(warnings) == 1 and str(states) in warnings[0], warnings
    assert not marker.exists()


def test_deepspeed_states_with_its_own_data_classes_pass(tmp_path):
    """DeepSpeed pickles a loss scaler, the ZeRO stage and fragment addresses into its optimizer
    states (seen in a real deepspeed_zero2 checkpoint): those, and only those, are let through."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    folder = tmp_path / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    states = {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients,
              "param_slice_mappings": [{"net.weight": fragment_address(numel=4, start=0)}], "optimizer_state_dict": {"state": {}}}
    torch.save({"optimizer_state_dict": states, "ds_version": "0.19"}, folder / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    check_safe(folder)
    torch.save({"module": torch.nn.Linear(2, 2)}, folder / "checkpoint" / "mp_rank_00_model_states.pt")  # a whole module: code
    with pytest.raises(UnsafeCheckpoint, match="mp_rank_00_model_states.pt"):
        check_safe(folder)


def dcp_checkpoint(folder: Path, extra: dict | None = None) -> None:
    """A torch-DCP checkpoint as Lightning's ModelParallelStrategy writes one: the module's and
    the optimizer's state (its param_groups are non-tensor items, pickled)."""
    import torch.distributed.checkpoint as dcp

    net = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    state = {"state_dict": net.state_dict(), "optimizer_0": optimizer.state_dict(), **(extra or {})}
    dcp.save(state, checkpoint_id=folder, no_dist=True)


def test_dcp_folder_is_checked_item_by_item(tmp_path):
    import torch.distributed.checkpoint as dcp

    clean = tmp_path / "clean.ckpt"
    dcp_checkpoint(clean)
    check_safe(clean)  # dtrain's own kind passes

    marker = tmp_path / "marker"
    planted = tmp_path / "planted.ckpt"
    dcp_checkpoint(planted, {"planted": Planted(marker)})
    with pytest.raises(UnsafeCheckpoint, match="planted"):
        check_safe(planted)
    assert not marker.exists()
    dcp.load({"planted": None}, checkpoint_id=planted, no_dist=True)  # torch-DCP's own loader runs it
    assert marker.exists()


def test_dcp_metadata_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "last.ckpt"
    dcp_checkpoint(folder)
    marker = tmp_path / "marker"
    import pickle

    (folder / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(UnsafeCheckpoint, match="metadata"):
        check_safe(folder)
    assert not marker.exists()


# A module in the lightning-hydra-template's manner: save_hyperparameters() keeps its net (an
# nn.Module) and its optimizer partial, and configure_optimizers reads them from self.hparams.
TEMPLATE = '''
import lightning as L
import torch
from torch import nn


class TemplateModule(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer, scheduler=None, compile: bool = False):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.net = net

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self):
        return self.hparams.optimizer(params=self.parameters())
'''


def test_template_module_storing_its_net_trains_tests_and_loads_weights_only(train, tmp_path, monkeypatch):
    # A whole (short) epoch, so validation writes a best checkpoint that the test stage loads.
    metrics, run_dir = train("model=mlp", "budget=smoke", "+trainer.limit_train_batches=3", template_module(tmp_path, monkeypatch))
    assert "test/loss" in metrics

    from my_template import TemplateModule

    from dtrain.nets.mlp import MLP

    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    for path in (best, run_dir / "checkpoints" / "last.ckpt"):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        assert saved["hyper_parameters"]["net"]["_target_"] == "dtrain.nets.mlp.MLP"
        assert saved["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.AdamW"
    net_config = {k: v for k, v in saved["hyper_parameters"]["net"].items() if k != "_target_"}
    loaded = TemplateModule.load_from_checkpoint(best, net=MLP(**net_config))
    for name, value in torch.load(best, map_location="cpu", weights_only=True)["state_dict"].items():
        assert torch.equal(loaded.state_dict()[name], value), name


def template_module(tmp_path, monkeypatch) -> str:
    """The TEMPLATE module, importable as my_template.TemplateModule."""
    (tmp_path / "code" / "my_template").mkdir(parents=True)
    (tmp_path / "code" / "my_template" / "__init__.py").write_text(textwrap.dedent(TEMPLATE))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return "model._target_=my_template.TemplateModule"


def test_weights_only_checkpoints_of_a_template_module_load_weights_only(train, tmp_path, monkeypatch):
    """`save_weights_only=true` makes Lightning skip the callbacks' on_save_checkpoint: the
    hyperparameters must be made plain where they enter the checkpoint all the same."""
    metrics, run_dir = train("model=mlp", "budget=smoke", "+trainer.limit_train_batches=3", template_module(tmp_path, monkeypatch),
                             "+callbacks.best_checkpoint.save_weights_only=true", "+callbacks.last_checkpoint.save_weights_only=true")
    assert "test/loss" in metrics  # the test stage loaded the best file weights-only
    for path in (next((run_dir / "checkpoints").glob("best-*.ckpt")), run_dir / "checkpoints" / "last.ckpt"):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        assert "optimizer_states" not in saved  # a weights-only checkpoint indeed
        assert saved["hyper_parameters"]["net"]["_target_"] == "dtrain.nets.mlp.MLP"


def test_help_names_the_trust_switch(tmp_path):
    shown = dtrain_cli("--help", cwd=tmp_path, timeout=120)
    assert shown.returncode == 0
    assert any(line.strip().startswith("runtime.trust_checkpoints=true") for line in shown.stdout.splitlines())


# PBT: a trial that exploits another takes the donor's checkpoint (dtrain/tune/trial.py).

def donor_checkpoint(folder: Path, donor: str, step: int, planted_marker: Path | None = None):
    """What a PBT exploit hands a trial: the donor's reported checkpoint folder, as Ray's Checkpoint."""
    from ray.tune import Checkpoint

    from dtrain.tune.files import CHECKPOINT_FILE, META_FILE

    folder.mkdir(parents=True)
    (folder / META_FILE).write_text(f'{{"trial_id": "{donor}", "step": {step}}}')
    state = {"state_dict": {"net.weight": torch.full((2, 2), 7.0)}, "loops": {}, "global_step": step,
             "callbacks": {"ModelCheckpoint": {"best_model_path": str(folder / "donor-best.ckpt"), "best_model_score": torch.tensor(0.5)}}}
    if planted_marker is not None:
        state["planted"] = Planted(planted_marker)
    torch.save(state, folder / CHECKPOINT_FILE)
    return Checkpoint.from_directory(folder)


@pytest.fixture
def trial_dir(tmp_path) -> Path:
    """A trial directory with a checkpoint of its own."""
    trial = tmp_path / "trials" / "b"
    (trial / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}, "loops": {}, "global_step": 3}, trial / "checkpoints" / "last.ckpt")
    return trial


def test_an_unsafe_pbt_donor_is_skipped_and_the_trial_keeps_its_own_checkpoint(tmp_path, trial_dir, caplog):
    from dtrain.tune.files import CHECKPOINT_FILE, SCHEDULE_FILE
    from dtrain.tune.trial import take_over_donor

    marker = tmp_path / "marker"
    donor = donor_checkpoint(tmp_path / "donor", "a", 5, planted_marker=marker)
    assert runs_code_when_unpickled(tmp_path / "donor" / CHECKPOINT_FILE, marker)
    own = {p.name: p.read_bytes() for p in (trial_dir / "checkpoints").iterdir()}

    with caplog.at_level(logging.WARNING):
        take_over_donor(trial_dir, "b", donor, ["model.optimizer.lr=0.1"])  # no exception: the trial goes on

    assert not marker.exists(), "the donor's code ran"
    assert {p.name: p.read_bytes() for p in (trial_dir / "checkpoints").iterdir()} == own
    assert not (trial_dir / SCHEDULE_FILE).exists()
    assert not list((trial_dir / "pbt").glob("*"))  # nothing taken
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / "donor" / CHECKPOINT_FILE) in warnings[0], warnings
    assert "would run code" in warnings[0] and "runtime.trust_checkpoints=true" in warnings[0]
    assert newest_valid_checkpoint(trial_dir) == trial_dir / "checkpoints" / "last.ckpt"  # what the trial resumes from


def test_a_safe_pbt_donor_is_taken_and_scheduled(tmp_path, trial_dir):
    import json

    from dtrain.tune.files import SCHEDULE_FILE
    from dtrain.tune.trial import take_over_donor

    take_over_donor(trial_dir, "b", donor_checkpoint(tmp_path / "donor", "a", 5), ["model.optimizer.lr=0.1"])

    taken = torch.load(trial_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(taken["state_dict"]["net.weight"], torch.full((2, 2), 7.0)) and taken["global_step"] == 5
    assert taken["callbacks"]["ModelCheckpoint"]["best_model_path"] == ""  # the donor's best is not this trial's
    (line,) = [json.loads(text) for text in (trial_dir / SCHEDULE_FILE).read_text().splitlines()]
    assert line["donor"] == "a" and line["step"] == 5 and line["overrides"] == ["model.optimizer.lr=0.1"]
    assert Path(line["donor_checkpoint"]).is_file()
