"""What one trial runs: the `python -m dtrain` run its overrides describe, in <sweep>/trials/<id>/."""

import json
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dtrain.tune.files import CHECKPOINT_FILE, EXPLOITS_DIR, FINISHED_FILE, META_FILE, SCHEDULE_FILE, TIMING_FILE
from dtrain.tune.plan import Plan

log = logging.getLogger(__name__)


def trial_overrides(plan: Plan, config: dict, trial_id: str) -> list[str]:
    """The trial's command line: `python -m dtrain <these>` is the same run."""
    swept = [dim.override(config[dim.param]) for dim in plan.dimensions if dim.param in config]
    reporting = [
        f"+callbacks.tune_report._target_=dtrain.tune.report.TuneReport",
        f"+callbacks.tune_report.trial_id={trial_id}",
        f"+callbacks.tune_report.keep={plan.settings['keep_checkpoints']}",
    ]
    first = []
    if plan.settings["scheduler"]["name"] == "pbt":
        # First among the callbacks, so every other callback's on_train_start sees the trial's own values.
        first += ["+callbacks.optimizer_config._target_=dtrain.tune.hyperparams.ApplyOptimizerConfig"]
        first += [f"+callbacks.optimizer_config.{key}=${{model.optimizer.{key}}}" for key in _optimizer_keys(plan)]
    return [*first, *plan.train_overrides, *swept, *plan.settings.get("trial_overrides", []), *reporting]


def _optimizer_keys(plan: Plan) -> list[str]:
    prefix = "model.optimizer."
    return [dim.key[len(prefix):] for dim in plan.dimensions if dim.key.startswith(prefix) and "." not in dim.key[len(prefix):]]


def trial_config(plan: Plan, config: dict, trial_id: str) -> DictConfig:
    """The trial's run config: a resume of its own directory once that holds a checkpoint."""
    from dtrain.config.compose import compose

    trial_dir = plan.trial_dir(trial_id)
    return resuming_if_checkpointed(compose(trial_overrides(plan, config, trial_id), run_dir=trial_dir), trial_dir)


def resuming_if_checkpointed(cfg: DictConfig, trial_dir: Path) -> DictConfig:
    from dtrain.checkpoints import newest_valid_checkpoint

    if newest_valid_checkpoint(trial_dir) is not None:  # a retry, a restarted sweep or an exploit: dtrain's resume
        with open_dict(cfg):
            cfg.resume = str(trial_dir)
    return cfg


def take_over_donor(trial_dir: Path, trial_id: str, checkpoint, overrides: list[str]) -> None:
    """A PBT exploit restarts this trial from another trial's checkpoint: make that checkpoint
    this run's newest, so that dtrain's own resume continues from the donor's weights."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        meta = json.loads((Path(folder) / META_FILE).read_text())
        if meta["trial_id"] == trial_id:
            return  # our own checkpoint: a retry resumes from the trial directory
        # The donor keeps training and Ray prunes its checkpoints: keep what this trial took,
        # so the schedule names a file that still exists.
        taken = trial_dir / EXPLOITS_DIR / f"step{meta['step']:08d}-from-{meta['trial_id']}.ckpt"
        if not _take(Path(folder) / CHECKPOINT_FILE, taken):
            return  # the trial goes on from its own newest checkpoint, with the values Ray handed it
    checkpoints = trial_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for old in checkpoints.glob("*.ckpt"):
        old.unlink()
    shutil.copyfile(taken, checkpoints / "last.ckpt")
    with open(trial_dir / SCHEDULE_FILE, "a") as schedule:
        line = {"step": meta["step"], "donor": meta["trial_id"], "donor_checkpoint": str(taken), "overrides": overrides}
        schedule.write(json.dumps(line) + "\n")


def _take(donor_file: Path, taken: Path) -> bool:
    """Copy the donor's checkpoint to `taken`; False, after one warning naming it, for a donor
    file that would run code (a trial crashing on it would crash again on each retry)."""
    from dtrain.checkpoints import TRUST_KEY, UnsafeCheckpoint

    taken.parent.mkdir(parents=True, exist_ok=True)
    try:
        _copy_without_donor_paths(donor_file, taken)
    except UnsafeCheckpoint as unsafe:
        log.warning(f"skipped PBT donor checkpoint {unsafe}; the trial continues from its own checkpoints ({TRUST_KEY}=true on the command line loads it)")
        return False
    return True


def _copy_without_donor_paths(donor_file: Path, target: Path) -> None:
    """Lightning's ModelCheckpoint restores `best_model_path` even from another directory, so
    the trial would test on the donor's best file (which the donor may since have replaced):
    forget the donor's paths; the trial's next validation saves a best of its own."""
    import torch

    from dtrain.checkpoints import load_checkpoint

    # Weights-only (dtrain's own checkpoints load so): a donor file that would run code raises
    # UnsafeCheckpoint, naming it, instead of running it.
    checkpoint = load_checkpoint(donor_file)
    for state in checkpoint.get("callbacks", {}).values():
        if isinstance(state, dict) and "best_model_path" in state:
            state.update(best_model_path="", best_model_score=None, best_k_models={}, kth_best_model_path="", last_model_path="")
    tmp = target.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(target)


def run_trial(config: dict, plan: Plan) -> None:
    """A single-process trial, run in the trial's own Ray actor (a Tune function trainable)."""
    from ray import tune

    from dtrain.checkpoints import TRUST_KEY, trusting
    from dtrain.config.compose import compose
    from dtrain.train import run

    _enter(plan)
    trial_id = tune.get_context().get_trial_id()
    trial_dir = plan.trial_dir(trial_id)
    if report_if_finished(trial_dir):
        return
    record_node(trial_dir)
    overrides = trial_overrides(plan, config, trial_id)
    cfg = compose(overrides, run_dir=trial_dir)
    with trusting(OmegaConf.select(cfg, TRUST_KEY, default=False) is True):  # the donor is trusted as the run's own files are
        take_over_donor(trial_dir, trial_id, tune.get_checkpoint(), overrides)
    run(resuming_if_checkpointed(cfg, trial_dir))  # the donor's weights, once taken over, are this run's newest checkpoint
    mark_finished(trial_dir)


def mark_finished(trial_dir: Path) -> None:
    """The run returned (trained and tested): keep its last report (with how many it made) beside it."""
    timing = json.loads((trial_dir / TIMING_FILE).read_text()) if (trial_dir / TIMING_FILE).is_file() else {}
    last = {**timing.get("last", {}), "reports": timing.get("reports", 0)}
    tmp = trial_dir / (FINISHED_FILE + ".tmp")
    tmp.write_text(json.dumps(last))
    tmp.replace(trial_dir / FINISHED_FILE)


def report_if_finished(trial_dir: Path) -> bool:
    """A restored sweep may start a trial again that had finished after Tune last saved its
    state (every 10 s or more): report its last result again instead of running it twice."""
    from ray import tune

    finished = trial_dir / FINISHED_FILE
    if not finished.is_file():
        return False
    tune.report(json.loads(finished.read_text()))
    return True


def run_distributed_trial(config: dict, plan: Plan) -> None:
    """A multi-worker trial: this actor drives a Ray Train TorchTrainer whose workers (on any
    node) each run the trial's config as one rank of a data-parallel job."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    _enter(plan)
    trial_id = tune.get_context().get_trial_id()
    if report_if_finished(plan.trial_dir(trial_id)):
        return
    record_node(plan.trial_dir(trial_id))
    resources = plan.settings["resources"]
    per_worker = {"CPU": float(resources["cpus_per_worker"])}
    if resources["gpus_per_worker"]:
        per_worker["GPU"] = float(resources["gpus_per_worker"])
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"plan": plan, "config": config, "trial_id": trial_id},
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=bool(resources["gpus_per_worker"]), resources_per_worker=per_worker),
        # a stable name: a retried driver finds the same Train run
        run_config=RunConfig(name="train", storage_path=str(plan.trial_dir(trial_id) / "ray_train"), callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
    mark_finished(plan.trial_dir(trial_id))


_RAY_STRATEGIES = {"ddp": "RayDDPStrategy", "fsdp": "RayFSDPStrategy", "deepspeed": "RayDeepSpeedStrategy"}


def ray_strategy_name(trainer_cfg) -> str:
    strategy = trainer_cfg.get("strategy", "auto")
    name = strategy if isinstance(strategy, str) else str(strategy.get("_target_", ""))
    name = name.lower()
    kind = "fsdp" if "fsdp" in name else "deepspeed" if "deepspeed" in name else "ddp"
    return _RAY_STRATEGIES[kind]


def _worker_loop(loop_config: dict) -> None:
    """One rank of a multi-worker trial: the trial's config with Lightning's Ray pieces."""
    from ray.train.lightning import prepare_trainer  # noqa: F401  (imported so a missing extra fails here)

    from dtrain.train import run

    plan, config, trial_id = loop_config["plan"], loop_config["config"], loop_config["trial_id"]
    _enter(plan)
    cfg = trial_config(plan, config, trial_id)
    strategy = {"_target_": f"ray.train.lightning.{ray_strategy_name(cfg.trainer)}"}
    if not isinstance(cfg.trainer.strategy, str):
        strategy.update({k: v for k, v in OmegaConf.to_container(cfg.trainer.strategy).items() if k != "_target_"})
    with open_dict(cfg):
        cfg.trainer.strategy = strategy
        cfg.trainer.devices = "auto"
        cfg.trainer.num_nodes = 1  # Ray's environment tells Lightning the world
        cfg.trainer.plugins = [{"_target_": "ray.train.lightning.RayLightningEnvironment"}]
        cfg.callbacks.tune_report.via = "train"
    run(cfg)


def record_node(trial_dir: Path) -> None:
    """ray_nodes.jsonl: which Ray node ran (each attempt of) this trial."""
    import ray

    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / "ray_nodes.jsonl", "a") as f:
        f.write(json.dumps({"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}) + "\n")


def _enter(plan: Plan) -> None:
    """Relative paths in overrides mean what they meant where the sweep was started."""
    if os.path.isdir(plan.cwd):
        os.chdir(plan.cwd)
