"""What every run records, checked against hand arithmetic: FLOPs of a training step, MFU of
large matmuls on the CPU, the time spent waiting for data, the convergence summary."""

import csv

import lightning as L
from lightning.pytorch.callbacks import Callback
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dtrain.callbacks.records import Records
from dtrain.perf.convergence import convergence_summary
from dtrain.perf.fetch_timer import FetchTimer
from dtrain.perf.throughput import Throughput
from dtrain.perf.flops import count_training_flops
from dtrain.perf.peak import dense_peak_correction


class SumOfOutputs(L.LightningModule):
    """A training step that is the net's forward and backward and nothing else the counter sees."""

    def __init__(self, net: nn.Module, lr: float = 0.01):
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width))


def flops_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return count_training_flops(SumOfOutputs(net), (x, y))[0]


def test_counted_flops_match_the_hand_formulas():
    # The input needs no gradient, so a first layer's backward is its weight gradient only: the
    # step is 2x its forward (a later layer's is 3x: the input gradient too).
    b, i, o = 8, 64, 32
    assert flops_of(nn.Linear(i, o), torch.randn(b, i), torch.randn(b, o)) == 2 * (2 * b * i * o)

    b, c_in, c_out, k, h = 2, 3, 16, 3, 8
    conv_forward = 2 * b * c_out * h * h * c_in * k * k  # padding 1: output h x h
    assert flops_of(nn.Conv2d(c_in, c_out, k, padding=1), torch.randn(b, c_in, h, h), torch.randn(b, c_out, h, h)) == 2 * conv_forward

    b, length, width, heads = 2, 16, 32, 4
    projections = 2 * (2 * b * length * width * 3 * width) + 3 * (2 * b * length * width * width)  # qkv: 2x, out: 3x
    attention = 3 * (2 * 2 * b * length * length * width)  # QK^T and PV forward, twice that backward
    x = torch.randn(b, length, width)
    assert flops_of(SelfAttention(width, heads), x, torch.randn(b, length, width)) == projections + attention


def test_dense_peaks_replace_the_sparse_entries():
    # Lightning 2.6's table lists sparse peaks for these (and finds no entry for "NVIDIA H200").
    assert dense_peak_correction("NVIDIA H200", torch.bfloat16) == pytest.approx(989.4e12)
    assert dense_peak_correction("NVIDIA H200 NVL", torch.bfloat16) == pytest.approx(835.5e12)
    assert dense_peak_correction("NVIDIA H100 NVL", torch.bfloat16) == pytest.approx(835.5e12)
    assert dense_peak_correction("NVIDIA H100 80GB HBM3", torch.bfloat16) is None  # Lightning's dense entry is right


def logged(run_dir, key: str) -> list[float]:
    rows = csv.DictReader((run_dir / "lightning_logs" / "version_0" / "metrics.csv").open())
    return [float(row[key]) for row in rows if row.get(key)]


def fit(tmp_path, module, data, steps: int, batch_size: int = 256, profiler=None, callbacks=()) -> Throughput:
    """Lightning's loop with dtrain's throughput record alone, metrics to CSV."""
    from lightning.pytorch.loggers import CSVLogger

    throughput = Throughput(cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", max_steps=steps, log_every_n_steps=1, callbacks=[Records({"throughput": throughput}), *callbacks],
        logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, profiler=profiler,
    )
    trainer.fit(module, DataLoader(data, batch_size=batch_size))
    return throughput


def test_large_matmuls_reach_a_real_share_of_the_measured_cpu_peak(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: the peak and the run see the same share of a busy machine
    try:
        width = 1024
        net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        data = TensorDataset(torch.randn(256 * 8, width), torch.randn(256 * 8, width))
        throughput = fit(tmp_path, SumOfOutputs(net), data, steps=8)
    finally:
        torch.set_num_threads(threads)
    mfu = logged(tmp_path, "train/mfu")
    assert throughput.peak_source.startswith("measured cpu matmul float32")
    assert len(mfu) >= 5
    # Unclamped: a figure above 1 would mean a wrong FLOP count or peak.
    assert all(value <= 1.0 for value in mfu), mfu
    assert max(mfu) > 0.2, mfu


class SlowDataset(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        import time

        time.sleep(0.005)  # a slow disk or decoder: 20 ms per batch of 4, against a step of well under 1 ms
        return torch.randn(8), torch.randn(1)


@pytest.mark.parametrize("profiler", ["dtrain", "lightning"])
def test_a_slow_dataset_shows_as_data_wait(tmp_path, profiler):
    """Measured from the fetches (dtrain's profiler) or, under another profiler, from the gaps between batches."""
    fit(tmp_path, SumOfOutputs(nn.Linear(8, 1)), SlowDataset(), steps=10, batch_size=4, profiler=FetchTimer() if profiler == "dtrain" else None)
    wait = logged(tmp_path, "train/data_wait_frac")
    assert len(wait) >= 5 and min(wait) > 0.5, wait


class SlowBookkeeping(Callback):
    """Work between batches that is not loading data: 20 ms after each batch, against a step of well under 1 ms."""

    def on_train_batch_end(self, *args) -> None:
        import time

        time.sleep(0.02)


def test_work_between_batches_is_not_data_wait(tmp_path):
    data = TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
    fit(tmp_path, SumOfOutputs(nn.Linear(8, 1)), data, steps=12, batch_size=4, profiler=FetchTimer(), callbacks=[SlowBookkeeping()])
    wait = logged(tmp_path, "train/data_wait_frac")
    assert len(wait) >= 5 and max(wait) < 0.1, wait


def test_the_fetch_timer_keeps_training_fetches_only():
    timer = FetchTimer()
    with timer.profile("[Callback]Records.on_train_batch_end"):  # a hook call: nothing recorded, nothing started
        assert timer._fetch_start is None
    timer.start("[_EvaluationLoop].val_next")
    timer.stop("[_EvaluationLoop].val_next")
    assert timer.fetch_seconds == 0.0
    timer.start("[_TrainingEpochLoop].train_dataloader_next")
    import time

    time.sleep(0.01)
    timer.stop("[_TrainingEpochLoop].train_dataloader_next")
    assert 0.01 <= timer.fetch_seconds < 1.0


def test_convergence_summary_for_a_loss_and_an_accuracy():
    history = [
        {"step": 10, "seconds": 1.0, "val/loss": 2.0, "val/acc": 0.10},
        {"step": 20, "seconds": 2.0, "val/loss": 1.2, "val/acc": 0.80},
        {"step": 30, "seconds": 3.0, "val/loss": 1.04, "val/acc": 0.88},
        {"step": 40, "seconds": 4.0, "val/loss": 1.0, "val/acc": 0.90},
        {"step": 50, "seconds": 5.0, "val/loss": 1.1, "val/acc": 0.85},
    ]
    summary = convergence_summary(history, monitor="val/loss", monitor_mode="min")
    assert summary["summary/best_val_loss"] == 1.0 and summary["summary/best_step"] == 40 and summary["summary/best_seconds"] == 4.0
    # 95% of the way from 2.0 to 1.0 is 1.05: first reached at step 30.
    assert summary["summary/steps_to_95"] == 30 and summary["summary/seconds_to_95"] == 3.0
    # Accuracy goes up: 95% of the way from 0.10 to 0.90 is 0.86, first reached at step 30 too.
    assert summary["summary/best_val_acc"] == 0.90 and summary["summary/best_step_val_acc"] == 40
    assert summary["summary/steps_to_95_val_acc"] == 30
    assert summary["summary/monitor"] == "val/loss" and summary["summary/validations"] == 5
