"""Mistakes a user can type, one per case: each ends with exit status 2 and one line naming the
key and the fix, with no traceback and no run directory created. The command line runs in this
process (`dtrain.__main__.main` with its arguments), as `python -m dtrain` would run it, except
for the two mistakes that only the data's first batch reveals, which start a real process."""

import os
import sys
from pathlib import Path

import pytest

from dtrain.config.compose import compose
from dtrain.run_dir import fix_run_dir, save_config
from tests.conftest import dtrain_cli

CPUS = os.cpu_count() or 1

# (arguments, the key the line must start with, a piece of the fix it must give)
MISTAKES = [
    # a group's option that does not exist, for every group a user chooses
    ("model=resnett", "model=resnett", "choose one of: "),
    ("data=imagez", "data=imagez", "choose one of: "),
    ("trainer=dpp", "trainer=dpp", "choose one of: "),
    ("budget=forever", "budget=forever", "choose one of: "),
    ("budget/validate=hourly", "budget/validate=hourly", "choose one of: "),
    ("logger=mlflow", "logger=mlflow", "choose one of: "),
    ("launcher=kubernetes", "launcher=kubernetes", "choose one of: "),
    ("callbacks=extra", "callbacks=extra", "choose one of: "),
    ("callbacks/progress=fancy", "callbacks/progress=fancy", "choose one of: "),
    ("model/net=vgg", "model/net=vgg", "choose one of: "),
    # keys that do not exist
    ("nosuchkey=1", "nosuchkey", "+nosuchkey="),
    ("model.optimizer.lrr=0.1", "model.optimizer.lrr", "did you mean model.optimizer.lr?"),
    ("trainer.max_epochz=3", "trainer.max_epochz", "did you mean trainer.max_epochs?"),
    ("data.batch_sizee=3", "data.batch_sizee", "did you mean data.batch_size?"),
    ("runtime.trust_checkpoint=true", "runtime.trust_checkpoint", "did you mean runtime.trust_checkpoints?"),
    ("data.path=somewhere.txt", "data.path", "no such key"),  # digits has no path
    # every key of the root config
    ("seed=abc", "seed", "seed=1234"),
    ("seed=-1", "seed", "seed=1234"),
    ("seed=1.5", "seed", "seed=1234"),
    ("seed=99999999999", "seed", "up to 4294967295"),
    ("test=maybe", "test", "true or false"),
    ("+shapes.num_classes=3", "shapes", "data.*"),
    ("run_id=a/b", "run_id", "letters, digits"),
    ("runtime.trust_checkpoints=sometimes", "runtime.trust_checkpoints", "true or false"),
    ("runtime.collective_timeout_s=0", "runtime.collective_timeout_s", "must be positive"),
    ("resume=no/such/run", "resume", "not a dtrain run directory"),
    # wrong types and impossible numbers
    ("data.batch_size=0", "data.batch_size", "positive integer"),
    ("data.batch_size=abc", "data.batch_size", "positive integer"),
    ("data.batch_size=2.5", "data.batch_size", "positive integer"),
    ("data.num_workers=-1", "data.num_workers", "data.num_workers=2"),
    ("data.num_workers=many", "data.num_workers", "data.num_workers=2"),
    ("data.val_fraction=1.5", "data.val_fraction", "data.val_fraction=0.1"),
    ("data.val_fraction=-0.1", "data.val_fraction", "data.val_fraction=0.1"),
    ("data.val_fraction=0.6 data.test_fraction=0.5", "data.val_fraction", "keep their sum below 1"),
    ("model.optimizer.lr=0", "model.optimizer.lr", "model.optimizer.lr=3e-4"),
    ("model.optimizer.lr=fast", "model.optimizer.lr", "model.optimizer.lr=3e-4"),
    ("model.optimizer.weight_decay=-1", "model.optimizer.weight_decay", "weight_decay=0.01"),
    ("model.net.dropout=1.5", "model.net.dropout", "model.net.dropout=0.1"),
    ("model.net.hidden=0", "model.net.hidden", "positive integer"),
    ("trainer.max_epochs=0", "trainer.max_epochs", "positive integer"),
    ("trainer.max_steps=0", "trainer.max_steps", "positive integer"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches", "positive integer"),
    ("trainer.num_nodes=0", "trainer.num_nodes", "positive integer"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch", "positive integer"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval", "trainer.val_check_interval=100"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval", "share of an epoch up to 1.0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val", "gradient_clip_val=1.0"),
    ("trainer.devices=0", "trainer.devices", "at least 1"),
    ("trainer.devices=abc", "trainer.devices", "trainer.devices=2"),
    (f"trainer.devices={CPUS + 1}", "trainer.devices", f"trainer.devices={CPUS}"),
    ("trainer.accelerator=tpu", "trainer.accelerator", "use cpu, gpu or auto"),
    ("trainer.precision=bf17", "trainer.precision", "bf16-mixed"),
    ("trainer.strategy=horovod", "trainer.strategy", "trainer=ddp"),
    ("logger.wandb.mode=sideways", "logger.wandb.mode", "offline"),
    # impossible combinations of strategy, precision and device
    (f"trainer=ddp trainer.devices={CPUS + 1}", "trainer.devices", f"trainer.devices={CPUS}"),
    ("trainer=fsdp trainer.precision=64-true", "trainer.precision", "32-true"),
    ("trainer=fsdp trainer.gradient_clip_val=1.0", "trainer.gradient_clip_algorithm", "gradient_clip_algorithm=value"),
    ("trainer=pipeline model=transformer trainer.strategy.stages=3", "trainer.strategy.stages", "divisor of 2"),
    ("trainer=model_parallel model=transformer trainer.strategy.tensor_parallel_size=3", "trainer.strategy.tensor_parallel_size", "divisor of 2"),
    ("model=transformer +model.compile=true", "model.compile", "runtime.compile=true"),
    ("runtime.activation_checkpointing=maybe", "runtime.activation_checkpointing", "true or false"),
    ("trainer=deepspeed_zero2 trainer.gradient_clip_val=1.0 +trainer.gradient_clip_algorithm=value", "trainer.gradient_clip_algorithm", "norm only"),
    ("trainer=deepspeed_zero2_offload model/optimizer=sgd", "model.optimizer", "model/optimizer=adamw"),
    # bad paths
    ("model=transformer data.path={tmp}/missing.txt", "data.path", "does not exist"),
    ("paths.runs_dir={tmp}/a-file/runs", "paths.runs_dir", "writable"),
    ("paths.runs_dir=/proc/dtrain-runs", "paths.runs_dir", "writable"),
]
if not __import__("torch").cuda.is_available():  # mistakes only on a machine without a GPU
    MISTAKES += [
        ("trainer=gpu", "trainer.accelerator", "trainer=cpu"),
        ("trainer.precision=16-mixed", "trainer.precision", "bf16-mixed"),
    ]


def run_main(monkeypatch, capsys, tmp_path: Path, args: list[str]) -> tuple[int, str]:
    from dtrain.__main__ import main

    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(sys, "argv", ["dtrain", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def assert_one_line(code: int, err: str, key: str, fix: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith(f"dtrain: error: {key}"), lines[0]
    assert fix in lines[0], lines[0]


@pytest.mark.parametrize("args, key, fix", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_ends_in_one_line(monkeypatch, capsys, tmp_path, args, key, fix):
    (tmp_path / "a-file").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_main(monkeypatch, capsys, tmp_path, args.replace("{tmp}", str(tmp_path)).split(" "))
    assert_one_line(code, err, key, fix)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory, nothing else
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_there_are_at_least_forty_mistakes():
    assert len(MISTAKES) >= 40


def test_resuming_with_a_key_a_run_cannot_change(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "old-run"
    cfg = compose(["budget=smoke"], run_dir=run_dir)
    fix_run_dir(cfg)
    save_config(cfg, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, err = run_main(monkeypatch, capsys, tmp_path, [f"resume={run_dir}", "model=mlp"])
    assert_one_line(code, err, "model", "a resumed run may change only")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_dtrain_knows_every_precision_lightning_takes():
    from typing import get_args

    from lightning.fabric.connector import _PRECISION_INPUT

    from dtrain.config.validate import PRECISIONS

    def flat(kind):
        return {value for arg in get_args(kind) for value in (flat(arg) if get_args(arg) else {arg})}

    assert flat(_PRECISION_INPUT) == set(PRECISIONS)


@pytest.mark.parametrize(
    "args, key",
    [
        (["model=gcn", "data=digits", "budget=smoke", "logger=[csv,wandb]"], "model.net"),  # only the first batch shows it
        (["+model.init_from=no/such.ckpt", "budget=smoke", "logger=[csv,wandb]"], "model.init_from"),
        (["model=transformer", "model.net.n_heads=1", "trainer=model_parallel", "budget=smoke"], "trainer.strategy.tensor_parallel_size"),
    ],
)
def test_a_mistake_found_inside_the_run_leaves_no_run_directory(tmp_path, args, key):
    done = dtrain_cli(*args, cwd=tmp_path, env={"WANDB_MODE": "offline"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1].startswith(f"dtrain: error: {key}"), lines[-1]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_heads_that_do_not_split_are_refused_before_any_rank_starts(monkeypatch, tmp_path):
    """The transformer declares its tensor-parallel counts from its config, so a tensor size its
    heads do not divide ends the run before dtrain starts its second rank. (In run() directly:
    Hydra's logging set-up in this process would outlive the test; the command line's one line
    and discarded run directory are the case above with n_heads=1.)"""
    import dtrain.launch.local as local
    from dtrain.config.errors import ConfigError
    from dtrain.train import run

    def start_ranks(*args, **kwargs):
        raise AssertionError("a rank was started")

    monkeypatch.setattr(local, "_start_ranks", start_ranks)
    cfg = compose(["model=transformer", "model.net.n_heads=3", "trainer=model_parallel", "trainer.devices=2", "logger=[csv]"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^trainer.strategy.tensor_parallel_size: model.net.n_heads=3 does not split over 2 "):
        run(cfg)


def test_counts_the_data_decides_wait_for_the_built_net():
    from omegaconf import OmegaConf

    from dtrain.parallel.tensor_parallel import check_declared_counts

    net = OmegaConf.create({"_target_": "dtrain.nets.transformer.Transformer", "vocab_size": 8, "max_len": 4, "n_heads": "${shapes.heads}"})
    check_declared_counts(net, 2)  # unknown until the data gives it: checked on the built net instead
    with pytest.raises(Exception, match="model.net.n_heads=3"):
        check_declared_counts(OmegaConf.merge(net, {"n_heads": 3}), 2)
    check_declared_counts(OmegaConf.merge(net, {"n_heads": 2}), 2)
