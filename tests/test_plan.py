"""dtrain.plan: what each strategy divides or moves off the device, FLOPs against the analytic
count, a recommendation that follows the device memory, and estimates that match the memory a
real run takes (RSS above the process's baseline) for models whose state dominates."""

import json
import subprocess
import sys

import pytest

from dtrain.config.compose import compose
from dtrain.plan import GIB, make_plan
from tests.conftest import REPO


def plan(*overrides, memory_gib=None):
    return make_plan(compose(["model=transformer", "data.max_bytes=100000", *overrides]), memory_gib)


def real_transformer_after_one_adam_step():
    """The plan's net built for real (not on the meta device) and stepped once by the config's own
    optimizer: (parameters, bytes of weights, of gradients, of the optimizer's state)."""
    import torch
    from hydra.utils import instantiate

    cfg = compose(["model=transformer"])
    cfg.shapes = {"vocab_size": 256, "block_size": cfg.data.block_size}  # the byte tokenizer's
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.model.optimizer)(params=net.parameters())
    net(torch.randint(0, 256, (2, cfg.data.block_size))).float().sum().backward()
    optimizer.step()
    params = list(net.parameters())
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.numel() > 1]
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)
    return sum(p.numel() for p in params), nbytes(params), nbytes(p.grad for p in params), nbytes(state)


def model_states(p) -> float:
    """Bytes per device of weights, gradients and optimizer state (the ZeRO paper's "model states")."""
    return p.device_bytes.get("weights", 0) + p.device_bytes["gradients"] + p.device_bytes.get("optimizer state", 0)


def test_memory_per_strategy_matches_real_tensors_and_the_zero_paper():
    one = plan("trainer=cpu")
    n, weights, gradients, adam_state = real_transformer_after_one_adam_step()
    assert one.params == n > 400_000  # counted on the meta device, equal to the real net's
    assert one.device_bytes["weights"] == weights and one.device_bytes["gradients"] == gradients
    assert one.device_bytes["optimizer state"] == adam_state  # torch's AdamW, measured after a step

    # ZeRO (Rajbhandari et al., 2020, Fig. 1): mixed-precision Adam holds 2 + 2 + 12 bytes per
    # parameter (16-bit weights and gradients, fp32 master copy, momentum and variance); stage 1
    # partitions the 12 over N ranks, stage 2 the gradients too, stage 3 everything.
    ranks = 2
    zero1, zero2, zero3 = (plan(f"trainer=deepspeed_zero{stage}", "trainer.precision=bf16-mixed") for stage in (1, 2, 3))
    assert model_states(zero1) == pytest.approx(n * (2 + 2 + 12 / ranks))
    assert model_states(zero2) == pytest.approx(n * (2 + (2 + 12) / ranks))
    assert model_states(zero3) == pytest.approx(n * (2 + 2 + 12) / ranks)
    # FSDP's full shard: each rank keeps 1/N of the fp32 weights, gradients and Adam state
    assert model_states(plan("trainer=fsdp")) == pytest.approx((weights + gradients + adam_state) / ranks)
    # DDP: whole copies, and its all-reduce buckets hold the gradients once more (torch's
    # gradient_as_bucket_view=False, the default, "saves" exactly the gradients' size when on)
    ddp = plan("trainer=ddp")
    assert model_states(ddp) == weights + 2 * gradients + adam_state
    # ZeRO-Infinity on the host: neither weights nor optimizer state stay on the device; the host
    # holds each rank's fp32 master copy, momentum and variance (and the step's temporary)
    zero3_off = plan("trainer=deepspeed_zero3_offload")
    assert "optimizer state" not in zero3_off.device_bytes and "weights" not in zero3_off.device_bytes
    assert 12 * n / ranks <= zero3_off.host_bytes["optimizer state"] <= 16 * n / ranks
    # the global batch splits over the ranks: per-device activations halve with two devices
    assert ddp.device_bytes["activations"] == pytest.approx(one.device_bytes["activations"] / 2, rel=0.01)


def test_pipeline_holds_one_stage_per_rank():
    """trainer=pipeline: a rank's weights, gradients and optimizer state are its stage's, the
    largest of 2 about equal halves of the net's layers (not a whole copy)."""
    from hydra.utils import instantiate

    from dtrain.parallel.pipeline_stages import split_layers

    deep = ("model.net.n_layers=8",)
    one, pipe = plan("trainer=cpu", *deep), plan("trainer=pipeline", *deep)
    cfg = compose(["model=transformer", *deep])
    cfg.shapes = {"vocab_size": 256, "block_size": cfg.data.block_size}
    stages = [sum(p.numel() for layer in group for p in layer.parameters()) for group in split_layers(instantiate(cfg.model.net), 2)]
    assert sum(stages) == one.params == pipe.params
    assert pipe.device_bytes["weights"] == max(stages) * 4 and pipe.device_bytes["gradients"] == max(stages) * 4
    assert model_states(pipe) == pytest.approx(model_states(one) * max(stages) / one.params)
    assert model_states(pipe) <= 0.6 * model_states(one)


def test_precision_changes_the_estimate():
    full, half, mixed = plan("trainer=cpu"), plan("trainer=cpu", "trainer.precision=bf16-true"), plan("trainer=cpu", "trainer.precision=bf16-mixed")
    assert half.device_bytes["weights"] == full.device_bytes["weights"] / 2
    assert half.device_bytes["activations"] <= 0.55 * full.device_bytes["activations"]
    assert half.device_bytes["activations"] < mixed.device_bytes["activations"] < full.device_bytes["activations"]


def test_flops_match_the_analytic_count():
    p = plan("trainer=cpu")
    from hydra.utils import instantiate

    cfg = compose(["model=transformer"])
    cfg.shapes = {"vocab_size": 256, "block_size": cfg.data.block_size}
    analytic = instantiate(cfg.model.net).flops_per_token() * cfg.data.block_size
    assert p.flops_per_sample == pytest.approx(analytic, rel=0.2)


def test_recommendation_follows_device_memory():
    tight = plan("trainer=ddp", memory_gib=80)
    assert tight.recommendation == "ddp"
    need = tight.total / GIB
    small = plan("trainer=ddp", memory_gib=need * 0.9)
    assert small.recommendation != "ddp"
    assert "does NOT fit" in small.report()


def test_cli_prints_the_plan():
    out = subprocess.run(
        [sys.executable, "-m", "dtrain.plan", "model=mlp", "trainer=fsdp", "plan.device_memory_gib=16"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for word in ("parameters", "FLOPs per sample", "weights", "gradients", "optimizer state", "activations", "fits", "recommended"):
        assert word in out.stdout


MEASURE = """
import json, sys
from dtrain.config.compose import compose
from dtrain.train import run
import lightning, torch

def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

warm, big = json.loads(sys.argv[2]), sys.argv[3:]
run(compose(warm, run_dir=sys.argv[1] + '-warm'))  # imports, data and caches: everything but the model
baseline = rss('VmRSS')
run(compose(big, run_dir=sys.argv[1]))
print(json.dumps({'above_baseline': rss('VmHWM') - baseline}))
"""

SMALL = {"transformer": ("model.net.d_model=64", "model.net.n_layers=1", "model.net.n_heads=2"), "mlp": ("model.net.hidden=64",)}
BIG = {
    "transformer": ("model=transformer", "model.net.d_model=768", "model.net.n_layers=7", "model.net.n_heads=12",
                    "data.batch_size=4", "data.max_bytes=300000", "~model.scheduler"),
    "mlp": ("model=mlp", "model.net.hidden=4096", "model.net.depth=4", "data.batch_size=16"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG))
def test_estimate_matches_measured_memory(name, tmp_path):
    overrides = [*BIG[name], "trainer=cpu", "budget=smoke", "trainer.max_steps=3", "trainer.limit_val_batches=0", "test=false",
                 "logger=[csv]", "~callbacks.best_checkpoint", "~callbacks.last_checkpoint", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false",
                 # saving a checkpoint serialises weights and optimizer state through host buffers: not training memory
                 "+trainer.enable_checkpointing=false"]
    estimate = make_plan(compose(overrides))
    assert estimate.params >= 50_000_000
    small = {o.split("=")[0] for o in SMALL[name]}
    warm = [o for o in overrides if o.split("=")[0] not in small] + list(SMALL[name])
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "run"), json.dumps(warm), *overrides], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["above_baseline"]
    print(f"{name}: {estimate.params / 1e6:.1f}M parameters, estimate {estimate.total / GIB:.3f} GiB, measured {measured / GIB:.3f} GiB")
    assert abs(estimate.total - measured) <= 0.25 * measured
