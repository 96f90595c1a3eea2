"""Every precision trains, and the low-precision ones really keep smaller activations for backward
(bytes saved for backward counted with saved_tensors_hooks on the transformer)."""

import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from dtrain.config.errors import ConfigError


class SavedActivations(Callback):
    """Counts the bytes autograd keeps for backward during the first training step (each storage
    once, parameters excluded) and writes them to <run>/saved_activations.json."""

    def __init__(self):
        self.saved: dict[int, int] = {}
        self.dtypes: dict[str, int] = {}
        self.hooks = None

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.params and storage.data_ptr() not in self.saved:
            self.saved[storage.data_ptr()] = storage.nbytes()
            self.dtypes[str(tensor.dtype)] = self.dtypes.get(str(tensor.dtype), 0) + storage.nbytes()
        return tensor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == 0 and self.hooks is None:
            self.params = {p.untyped_storage().data_ptr() for p in pl_module.parameters()}
            self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self.hooks.__enter__()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.hooks is not None and trainer.global_step == 0:
            self.hooks.__exit__(None, None, None)
            out = Path(trainer.default_root_dir) / "saved_activations.json"
            out.write_text(json.dumps({"bytes": sum(self.saved.values()), "by_dtype": self.dtypes, "loss": loss.item()}))


PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "64-true", "16-true")


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory):
    from dtrain.config.compose import compose
    from dtrain.train import run

    root = tmp_path_factory.mktemp("precision")
    results = {}
    for precision in PRECISIONS:
        run_dir = root / precision
        cfg = compose(
            [
                "model=transformer", "data.max_bytes=100000", f"trainer.precision={precision}", "budget=smoke", "trainer.max_steps=2", "test=false",
                "logger=[csv]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                "~callbacks.best_checkpoint", "+callbacks.saved._target_=tests.test_precision.SavedActivations",
                # 16-true overflows to NaN in the untrained transformer's second step, which would
                # stop the run (callbacks.nonfinite); what is measured here is the first step.
                "~callbacks.nonfinite",
            ],
            run_dir=run_dir,
        )
        run(cfg)
        results[precision] = json.loads((run_dir / "saved_activations.json").read_text())
    return results


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_trains(saved_bytes, precision):
    assert saved_bytes[precision]["bytes"] > 0
    assert math.isfinite(saved_bytes[precision]["loss"])
    assert abs(saved_bytes[precision]["loss"] - math.log(256)) < 1.0  # an untrained byte model: about ln 256


def test_half_precision_keeps_smaller_activations(saved_bytes):
    full = saved_bytes["32-true"]["bytes"]
    assert saved_bytes["bf16-true"]["bytes"] <= 0.55 * full, saved_bytes
    assert saved_bytes["bf16-mixed"]["bytes"] <= 0.7 * full, saved_bytes
    assert saved_bytes["64-true"]["bytes"] >= 1.8 * full, saved_bytes  # and double keeps twice as much
    assert "torch.bfloat16" in saved_bytes["bf16-mixed"]["by_dtype"]


def test_16_mixed_is_refused_on_the_cpu(train):
    with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
        train("model=mlp", "trainer.precision=16-mixed", "budget=smoke")
