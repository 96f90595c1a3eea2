"""A sharded checkpoint replaced after check_safe passed is still never run: within `trusting`,
the loads DeepSpeed's and torch-DCP's own loaders make are weights-only themselves."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException  # DCP's wrapper of a rank's error

from dtrain.checkpoints import UnsafeCheckpoint, check_safe, trusting
from tests.test_checkpoint_safety import Planted, dcp_checkpoint, plant


def deepspeed_folder(folder: Path) -> Path:
    """A DeepSpeed checkpoint folder, as DeepSpeed's zero-2 writes one (its data classes in the optimizer states)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    tag = folder / "checkpoint"
    tag.mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    torch.save({"module": {"net.weight": torch.ones(2, 2)}, "global_step": 3}, tag / "mp_rank_00_model_states.pt")
    optimizer = {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients, "optimizer_state_dict": {"state": {}}}
    torch.save({"optimizer_state_dict": optimizer}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return tag


def test_deepspeed_state_swapped_after_the_check_is_refused_by_deepspeeds_own_load(tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    marker, engine = tmp_path / "marker", TorchCheckpointEngine()
    tag = deepspeed_folder(tmp_path / "last.ckpt")
    check_safe(tmp_path / "last.ckpt")
    states = plant(tag / "mp_rank_00_model_states.pt", marker)  # swapped in after the check

    with trusting(False):
        optimizer = engine.load(str(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"), map_location="cpu")
        with pytest.raises(UnsafeCheckpoint, match="mp_rank_00_model_states.pt"):
            engine.load(str(states), map_location="cpu")
    assert not marker.exists(), "DeepSpeed's loader ran the swapped file's code"
    assert optimizer["optimizer_state_dict"]["loss_scaler"].cur_scale == 1.0  # its own data classes still load

    with trusting(True):  # runtime.trust_checkpoints=true: loaded fully
        engine.load(str(states), map_location="cpu")
    assert marker.exists()
    marker.unlink()
    engine.load(str(states), map_location="cpu")  # outside a run's `trusting`, DeepSpeed is left as it was
    assert marker.exists()


def test_dcp_folder_swapped_after_the_check_is_refused_by_dcps_own_load(tmp_path):
    import torch.distributed.checkpoint as dcp

    marker, folder = tmp_path / "marker", tmp_path / "last.ckpt"
    dcp_checkpoint(folder)
    check_safe(folder)
    clean = {"state_dict": {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}}
    with trusting(False):
        dcp.load(clean, checkpoint_id=folder, no_dist=True)  # a clean folder loads as before
    assert clean["state_dict"]["weight"].abs().sum() > 0

    shutil.rmtree(folder)
    dcp_checkpoint(folder, {"planted": Planted(marker)})  # swapped in after the check
    with trusting(False), pytest.raises(CheckpointException, match="would run code"):
        dcp.load({"planted": None}, checkpoint_id=folder, no_dist=True)
    assert not marker.exists(), "torch-DCP's loader ran the swapped item's code"


def test_dcp_metadata_swapped_after_the_check_is_refused(tmp_path):
    import torch.distributed.checkpoint as dcp

    marker, folder = tmp_path / "marker", tmp_path / "last.ckpt"
    dcp_checkpoint(folder)
    check_safe(folder)
    (folder / ".metadata").write_bytes(pickle.dumps(Planted(marker)))  # swapped in after the check
    with trusting(False), pytest.raises(CheckpointException, match="would run code"):
        dcp.load({"state_dict": {"weight": torch.zeros(2, 4)}}, checkpoint_id=folder, no_dist=True)
    assert not marker.exists(), "torch-DCP ran the swapped .metadata's code"


def test_a_refused_load_inside_a_run_ends_in_one_line(tmp_path):
    from dtrain.failures import known_failures

    with pytest.raises(Exception) as refused, known_failures():
        raise UnsafeCheckpoint(tmp_path / "last.ckpt" / "mp_rank_00_model_states.pt", "it names posix.system")
    assert str(refused.value).startswith("runtime.trust_checkpoints: ") and "mp_rank_00_model_states.pt would run code" in str(refused.value)
