"""What dtrain costs over the loop a careful engineer writes by hand (issue: Performance, 1).

The same net, data, optimizer, batch size and seed, trained three ways:
  hand       a plain PyTorch loop that also validates and saves a checkpoint every epoch;
  lightning  plain Lightning with its default Trainer settings (logger, checkpoint, progress bar);
  dtrain     `python -m dtrain`'s run(cfg), with its default callbacks and loggers (CSV and W&B
             offline, checkpoints, records, progress bar).
Each side runs in a fresh process and is timed there from the start of the first epoch to the end
of training (start-up, data loading, the sanity check and the test stage excluded); the sides take
turns, `--repeats` times, and the JSON gives each side's median seconds per training step and the
ratios of the medians, with the per-repeat ratios beside them (the machine is shared and noisy).

    .venv/bin/python benchmarks/loop_overhead.py [--cases mlp transformer] [--repeats 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("hand", "lightning", "dtrain")
REPO = Path(__file__).resolve().parents[1]


# -- the cases ------------------------------------------------------------------------------
def case_overrides(case: str) -> list[str]:
    """dtrain overrides of each case; the hand loop and plain Lightning build the same net,
    data and optimizer from the config these compose."""
    if case == "mlp":  # about 5 ms a step: 256 features, 512-512 hidden, 10 classes, batch 128
        return ["model=mlp", "model.net.hidden=512", "model.net.depth=2", "data.batch_size=128", "trainer.max_epochs=3",
                "model.optimizer.lr=1e-3", "budget/validate=every_epoch"]
    if case == "transformer":  # the default transformer, a few hundred steps
        return ["model=transformer", "trainer.max_steps=150", "trainer.max_epochs=-1", "trainer.val_check_interval=50",
                "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=8"]
    raise SystemExit(f"unknown case {case!r}: choose mlp or transformer")


def random_table_config(seed: int) -> dict:
    """The MLP's data: 140 training batches of 128 samples with 256 features, labelled by a
    fixed random linear teacher (learnable), plus validation and test sets."""
    return {"_target_": "benchmarks.loop_overhead.RandomTable", "batch_size": 128, "num_workers": 0, "seed": seed}


def make_random_table():
    from dtrain.data.base import DataModule

    class RandomTable(DataModule):
        def __init__(self, features: int = 256, classes: int = 10, train_batches: int = 140, **shared):
            super().__init__(val_fraction=None, test_fraction=None, **shared)
            self.features, self.classes, self.train_batches = features, classes, train_batches

        @property
        def shapes(self):
            return {"num_features": self.features, "num_classes": self.classes, "num_outputs": self.classes}

        def setup(self, stage=None):
            if self.train_set is not None:
                return
            import torch
            from torch.utils.data import TensorDataset

            generator = torch.Generator().manual_seed(0)
            teacher = torch.randn(self.features, self.classes, generator=generator)
            sizes = (self.train_batches * self.batch_size, 2048, 1024)
            sets = []
            for size in sizes:
                x = torch.randn(size, self.features, generator=generator)
                sets.append(TensorDataset(x, (x @ teacher).argmax(1)))
            self.train_set, self.val_set, self.test_set = sets

    return RandomTable


def compose_case(case: str, run_dir: Path, seed: int = 1234):
    from omegaconf import OmegaConf, open_dict

    from dtrain.config.compose import compose

    cfg = compose([*case_overrides(case), f"seed={seed}"], run_dir=run_dir)
    if case == "mlp":
        with open_dict(cfg):
            cfg.data = OmegaConf.create(random_table_config(seed))
    return cfg


# -- timing inside each side's process -------------------------------------------------------
class Clock:
    """Start of the first training epoch to the end of training, and the steps in between: wall
    time (the figure that counts) and this process's CPU time (a cross-check that other jobs on a
    shared machine move less; it leaves out helper processes such as W&B's service)."""

    def __init__(self):
        self.started = self.ended = None
        self.steps = 0

    def start(self):
        if self.started is None:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def end(self, steps: int):
        self.ended, self.cpu_ended, self.steps = time.perf_counter(), time.process_time(), steps

    def result(self) -> dict:
        return {"seconds": self.ended - self.started, "cpu_seconds": self.cpu_ended - self.cpu_started, "steps": self.steps}


def lightning_clock(clock: Clock):
    import lightning as L

    class ClockCallback(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            clock.start()

        def on_train_end(self, trainer, pl_module):
            clock.end(trainer.global_step)

    return ClockCallback()


def loss_of(case: str):
    import torch.nn.functional as F

    if case == "mlp":
        return lambda net, batch: F.cross_entropy(net(batch[0]), batch[1])
    return lambda net, batch: F.cross_entropy(net(batch[0]).flatten(0, 1), batch[1].flatten())


def built(cfg):
    """The net, the datamodule (set up) and the optimizer factory dtrain's config describes."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from dtrain.data.foreign import data_shapes

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        cfg.shapes = data_shapes(datamodule)
    datamodule.setup("fit")
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.model.optimizer)
    return net, datamodule, optimizer


def steps_budget(cfg) -> tuple[int, int, int | None]:
    """(max_epochs, max_steps, validate every n steps or None for every epoch) of the case."""
    trainer = cfg.trainer
    every = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
    return int(trainer.max_epochs), int(trainer.max_steps), every


def run_hand(case: str, run_dir: Path) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from dtrain.tasks.base import decay_groups

    cfg = compose_case(case, run_dir)
    net, datamodule, optimizer_factory = built(cfg)
    # built() loads Lightning, whose import sets this; a loop written by hand never has it, and it
    # costs every optimizer step on a machine without NVIDIA's driver (dtrain.launch.cuda_probe).
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    optimizer = optimizer_factory(params=decay_groups(net))
    loss_fn = loss_of(case)
    batch = cfg.data.batch_size
    train = DataLoader(datamodule.train_set, batch_size=batch, shuffle=True, drop_last=True)
    val = DataLoader(datamodule.val_set, batch_size=batch)
    limit_val = cfg.trainer.limit_val_batches or len(val)
    max_epochs, max_steps, every = steps_budget(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)

    def validate_and_save(epoch: int, step: int):
        net.eval()
        with torch.no_grad():
            losses = [loss_fn(net, b) for _, b in zip(range(int(limit_val)), val)]
        net.train()
        val_loss = float(torch.stack(losses).mean())
        torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                    "val_loss": val_loss}, run_dir / "last.pt")

    clock, step, epoch = Clock(), 0, 0
    clock.start()
    net.train()
    while (max_epochs < 0 or epoch < max_epochs) and (max_steps < 0 or step < max_steps):
        for b in train:
            loss = loss_fn(net, b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if every and step % every == 0:
                validate_and_save(epoch, step)
            if step == max_steps:
                break
        else:
            if not every:
                validate_and_save(epoch, step)
        epoch += 1
    clock.end(step)
    return clock.result()


def run_lightning(case: str, run_dir: Path) -> dict:
    import lightning as L
    import torch

    from dtrain.tasks.base import decay_groups

    cfg = compose_case(case, run_dir)
    net, datamodule, optimizer_factory = built(cfg)
    loss_fn = loss_of(case)

    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            loss = loss_fn(self.net, batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", loss_fn(self.net, batch))

        def configure_optimizers(self):
            return optimizer_factory(params=decay_groups(self.net))

    batch = cfg.data.batch_size
    train = torch.utils.data.DataLoader(datamodule.train_set, batch_size=batch, shuffle=True, drop_last=True)
    val = torch.utils.data.DataLoader(datamodule.val_set, batch_size=batch)
    max_epochs, max_steps, every = steps_budget(cfg)
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, max_steps=max_steps, default_root_dir=run_dir,
        val_check_interval=every, check_val_every_n_epoch=None if every else 1,
        limit_val_batches=cfg.trainer.limit_val_batches, callbacks=[lightning_clock(clock)],
    )
    trainer.fit(Plain(), train_dataloaders=train, val_dataloaders=val)
    return clock.result()


def run_dtrain(case: str, run_dir: Path) -> dict:
    from omegaconf import open_dict

    from dtrain.train import run

    cfg = compose_case(case, run_dir)
    with open_dict(cfg):
        cfg.callbacks.benchmark_clock = {"_target_": "benchmarks.loop_overhead.clock_callback"}
        cfg.test = False
    run(cfg)
    return _CLOCK.result()


_CLOCK = Clock()


def clock_callback():
    """The dtrain side's clock, as a callback its config can name."""
    return lightning_clock(_CLOCK)


def __getattr__(name):  # `benchmarks.loop_overhead.RandomTable`, built when first asked for
    if name == "RandomTable":
        globals()[name] = make_random_table()
        return globals()[name]
    raise AttributeError(name)


# -- the driver --------------------------------------------------------------------------------
def one_side(side: str, case: str, threads: int) -> dict:
    """Run one side in a fresh process; its timing comes back as the last line of its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        code = (f"import torch, json; torch.set_num_threads({threads}); from benchmarks.loop_overhead import run_{side}; "
                f"from pathlib import Path; print('RESULT ' + json.dumps(run_{side}({case!r}, Path({tmp!r}) / 'run')))")
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{side} / {case} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["mlp", "transformer"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every side (the same for all)")
    parser.add_argument("--sides", nargs="+", default=list(SIDES))
    args = parser.parse_args()
    report = {"threads": args.threads, "repeats": args.repeats, "load_before": os.getloadavg()[0], "cases": {}}
    for case in args.cases:
        per_step = {side: [] for side in args.sides}
        cpu_per_step = {side: [] for side in args.sides}
        for _ in range(args.repeats):
            for side in args.sides:  # the sides take turns, so a slow minute hits them alike
                result = one_side(side, case, args.threads)
                per_step[side].append(result["seconds"] / result["steps"])
                cpu_per_step[side].append(result["cpu_seconds"] / result["steps"])
        medians = {side: statistics.median(values) for side, values in per_step.items()}
        cpu_medians = {side: statistics.median(values) for side, values in cpu_per_step.items()}
        entry = {"ms_per_step": {side: round(1e3 * m, 3) for side, m in medians.items()},
                 "ms_per_step_all": {side: [round(1e3 * v, 3) for v in values] for side, values in per_step.items()},
                 "cpu_ms_per_step": {side: round(1e3 * m, 3) for side, m in cpu_medians.items()}}
        if "hand" in cpu_medians:
            entry["cpu_over_hand"] = {side: round(m / cpu_medians["hand"], 3) for side, m in cpu_medians.items() if side != "hand"}
        if "hand" in per_step:
            for side in args.sides:
                if side != "hand":
                    entry[f"{side}_over_hand"] = round(medians[side] / medians["hand"], 3)
                    entry[f"{side}_over_hand_each"] = [round(s / h, 3) for s, h in zip(per_step[side], per_step["hand"])]
        if "lightning" in per_step and "dtrain" in per_step:
            entry["dtrain_over_lightning"] = round(medians["dtrain"] / medians["lightning"], 3)
        report["cases"][case] = entry
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
