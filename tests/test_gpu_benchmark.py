"""benchmarks/gpu.sh's dry run (`--device cpu --tiny`): the GPU benchmark's own code trains the
decoder and the ResNet for real, through `python -m dtrain` and the hand-written loop, and prints
the JSON the GPU run will, without the packages the GPU machine's image lacks."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Not on the GPU machine's image (KINDS.md's package list): the benchmark must not need them.
ABSENT_ON_GPU_IMAGE = ("wandb", "ray", "deepspeed", "submitit", "optuna")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_benchmark")
    absent = tmp / "absent"
    for name in ABSENT_ON_GPU_IMAGE:
        (absent / name).mkdir(parents=True)
        (absent / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU image')\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(absent)}
    out = tmp / "out"
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--device", "cpu", "--tiny", "--threads", "1", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout), out


def test_both_cases_take_real_steps_on_both_sides(dry_run):
    result, _ = dry_run
    for case, rate in (("decoder", "tokens_per_sec"), ("resnet", "images_per_sec")):
        hand, dtrain = result[case]["hand"], result[case]["dtrain"]
        for side in (hand, dtrain):
            assert "error" not in side, side
            assert side["steps"] == result[case]["case"]["steps"], (case, side)
            assert side[rate] > 0 and side["step_time_s"] > 0, (case, side)
            assert math.isfinite(side["last_loss"]), (case, side)
            assert side["peak_memory_gib"] > 0, (case, side)
        assert hand["weights_changed"] and math.isfinite(hand["first_loss"]), (case, hand)
        assert hand["timed_windows"] == dtrain["timed_windows"] > 0  # the same steps timed on both sides
        assert result[case]["dtrain_over_hand"] > 0


def test_the_decoder_figures_use_one_flop_count_for_both_sides(dry_run):
    result, _ = dry_run
    decoder = result["decoder"]
    case = decoder["case"]
    # 6N + 12 L d T with N the parameters (tied embeddings once) less the position table.
    n = decoder["params"] - case["block_size"] * case["d_model"]
    assert decoder["flops_per_token"] == 6 * n + 12 * case["n_layers"] * case["d_model"] * case["block_size"]
    matmul = result["ceilings"]["measured_bf16_matmul"]["median_flops"]
    assert matmul > 0
    for side in ("hand", "dtrain"):
        figures = decoder[side]
        assert figures["tflops"] * 1e12 == pytest.approx(figures["tokens_per_sec"] * decoder["flops_per_token"])
        assert figures["mfu_vs_measured_matmul"] == pytest.approx(figures["tflops"] * 1e12 / matmul)
        assert figures["mfu"] is None  # a CPU has no datasheet peak
    assert decoder["dtrain"]["params"] == decoder["params"]  # dtrain trained the same net
    assert any("scaled_dot_product" in name for name in decoder["hand"]["profiled_kernels"]), decoder["hand"]  # SDPA ran


def test_the_json_is_also_written_with_the_dtrain_logs(dry_run):
    result, out = dry_run
    assert json.loads((out / "gpu_benchmark.json").read_text()) == result
    for case in ("decoder", "resnet"):
        log = (out / f"{case}_dtrain.log").read_text()
        assert " -m dtrain " in log.splitlines()[0]
        assert "max_steps" in log
    assert result["resnet"]["channels_last"] and result["tiny"] is True


def test_without_hydra_or_wheels_it_says_what_to_run_first(tmp_path):
    """On a Python without Hydra (the GPU image) and no prepared wheels: one line naming gpu_prepare.sh."""
    fake_python = tmp_path / "python3"
    fake_python.write_text(f"#!/bin/sh\nif [ \"$1\" = -c ]; then exit 1; fi\nexec {sys.executable} \"$@\"\n")
    fake_python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake_python), "GPU_WHEELS": str(tmp_path / "no_wheels")}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--tiny"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "gpu_prepare.sh" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_dataloader_workers_give_way_to_a_small_dev_shm(monkeypatch):
    """A container's 64 MB /dev/shm cannot hold the ResNet's batches in flight: both sides then load in the main process."""
    import shutil
    from types import SimpleNamespace

    from benchmarks.gpu.__main__ import fit_workers_to_shared_memory
    from benchmarks.gpu.sizes import GPU_RESNET

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=64 << 20, used=0, free=64 << 20))
    case, note = fit_workers_to_shared_memory(GPU_RESNET)
    assert case.num_workers == 0 and note["num_workers_lowered_from"] == GPU_RESNET.num_workers
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=64 << 30, used=0, free=64 << 30))
    assert fit_workers_to_shared_memory(GPU_RESNET)[0] == GPU_RESNET
