"""Lightning's NVML-based CUDA check, dropped where NVML's library cannot load: torch would try
to load it again at every optimizer step, and fall back to the same answer."""

import os

import pytest
import torch

from dtrain.launch import cuda_probe


@pytest.fixture
def lightning_set_it(monkeypatch):
    monkeypatch.setenv(cuda_probe.VARIABLE, "1")  # as `import lightning` does


def test_dropped_where_nvml_cannot_load_with_torchs_answer_unchanged(lightning_set_it, monkeypatch):
    monkeypatch.setattr(cuda_probe, "NVML_LIBRARY", "libno-such-nvml.so.1")
    available = torch.cuda.is_available()
    cuda_probe.skip_nvml_where_absent()
    assert cuda_probe.VARIABLE not in os.environ
    assert torch.cuda.is_available() == available


def test_kept_where_nvml_loads(lightning_set_it, monkeypatch):
    monkeypatch.setattr(cuda_probe, "NVML_LIBRARY", "libc.so.6")  # a library that loads, standing in for NVML's
    cuda_probe.skip_nvml_where_absent()
    assert os.environ[cuda_probe.VARIABLE] == "1"


def test_a_run_steps_without_it_on_this_machine(tmp_path):
    """run() drops it after Lightning's import set it, on a machine whose NVML does not load."""
    import ctypes
    import json

    from dtrain.config.compose import compose
    from dtrain.train import run

    try:
        ctypes.CDLL(cuda_probe.NVML_LIBRARY)
        pytest.skip("NVML loads here: the variable is kept")
    except OSError:
        pass
    cfg = compose([
        "model=mlp", "trainer.max_steps=2", "logger=[csv]", "test=false", "trainer.enable_progress_bar=false",
        "+callbacks.probe._target_=tests.probes.EnvironmentProbe", f"+callbacks.probe.name={cuda_probe.VARIABLE}",
    ], run_dir=tmp_path / "run")
    run(cfg)
    assert json.loads((tmp_path / "run" / "environment.json").read_text()) == [None, None]
