"""Builds Ray Tune's Tuner from a plan: search algorithm, scheduler, resources, storage, retries."""

import os

from dtrain.config.errors import ConfigError
from dtrain.tune.plan import Plan

SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
TIME_ATTR = "training_iteration"  # one per report, i.e. per validation (per epoch by default)


def _check_choice(key: str, value: str, options: tuple) -> None:
    if value not in options:
        import difflib

        hint = difflib.get_close_matches(str(value), options, n=1)
        did_you_mean = f"did you mean {hint[0]}? " if hint else ""
        raise ConfigError(key, f"unknown {key.rpartition('.')[2]} {value!r}; {did_you_mean}choose one of {', '.join(options)}")


def check_algorithms(plan: Plan) -> None:
    s = plan.settings
    _check_choice("sweep.search", s["search"], SEARCHES)
    _check_choice("sweep.scheduler.name", s["scheduler"]["name"], SCHEDULERS)
    kinds = {dim.kind for dim in plan.dimensions}
    if s["search"] == "optuna" and "grid" in kinds:
        raise ConfigError("sweep.search", "optuna proposes values itself: write choice(...) instead of grid(...), or use sweep.search=grid")
    if s["search"] == "grid" and kinds - {"grid"}:
        raise ConfigError("sweep.search", "a grid search needs grid(...) for every swept key; use sweep.search=random for distributions")
    if s["scheduler"]["name"] == "pbt" and plan.workers > 1:
        raise ConfigError("sweep.scheduler.name", "PBT restarts trials from each other's checkpoints, which dtrain supports for single-worker trials only; use workers=1 or asha")
    if s["scheduler"]["name"] == "pbt" and any(dim.is_group for dim in plan.dimensions):
        raise ConfigError("sweep.scheduler.name", "PBT cannot mutate a config-group choice (the weights would not fit); sweep it with asha or fifo")
    seed = s.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError("sweep.seed", f"expected a non-negative integer (or null for a random one), got {seed!r}")
    if s["mode"] not in ("min", "max"):
        raise ConfigError("sweep.mode", f"must be min or max, got {s['mode']!r}")


def param_space(plan: Plan) -> dict:
    return {dim.param: dim.domain() for dim in plan.dimensions}


def _searcher(plan: Plan):
    """Optuna's TPE, or Tune's own variant generator (random and grid); `sweep.seed` seeds either."""
    s = plan.settings
    seed = s.get("seed")  # validated by check_algorithms
    if s["search"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=s["metric"], mode=s["mode"], seed=seed)
    if seed is None:
        return None  # Tune builds its generator itself, with max_concurrent_trials
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=int(s.get("max_concurrent_trials") or 0), random_state=seed)


def _mutations(plan: Plan) -> dict:
    """PBT resamples from these: a list for choice/grid (Tune moves to a neighbouring value), else the distribution."""
    return {dim.param: list(dim.args) if dim.kind in ("choice", "grid") else dim.domain() for dim in plan.dimensions}


def _scheduler(plan: Plan):
    s, sched = plan.settings, plan.settings["scheduler"]
    if sched["name"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr=TIME_ATTR, max_t=int(sched["max_t"]), grace_period=int(sched["grace_period"]), reduction_factor=float(sched["reduction_factor"]))
    if sched["name"] == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        return PopulationBasedTraining(
            time_attr=TIME_ATTR, perturbation_interval=int(sched["perturbation_interval"]),
            quantile_fraction=float(sched["quantile_fraction"]), hyperparam_mutations=_mutations(plan),
        )
    return None


def trial_resources(plan: Plan) -> dict:
    r = plan.settings["resources"]
    if plan.workers > 1:
        return {"CPU": 0.1}  # the driver only; the TorchTrainer asks the cluster for its workers
    resources = {"CPU": float(r["cpus_per_worker"])}
    if r["gpus_per_worker"]:
        resources["GPU"] = float(r["gpus_per_worker"])
    return resources


def trainable(plan: Plan):
    from ray import tune

    from dtrain.tune.trial import run_distributed_trial, run_trial

    fn = run_distributed_trial if plan.workers > 1 else run_trial
    return tune.with_resources(tune.with_parameters(fn, plan=plan), trial_resources(plan))


def _dirname(trial) -> str:
    return f"ray_{trial.trial_id}"  # the dtrain run directory is trials/<trial id>/


def build_tuner(plan: Plan):
    from ray import tune

    s = plan.settings
    # No `stop`: a trial ends when its run does (after its test), as `python -m dtrain` would.
    # Each trial is a dtrain run that keeps its own metrics (metrics.csv, W&B, TensorBoard with
    # logger=[...,tensorboard]): Tune's copies of them in ray_<id>/ (progress.csv, result.json,
    # TensorBoard events) are not written. Its TensorBoard logger imported torch into the driver
    # (1.7 s before the first trial could start); naming the other two instead imports W&B
    # (1 s, for Tune's usage record of the callbacks given).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    run_config = tune.RunConfig(
        name=plan.sweep_dir.name,
        storage_path=str(plan.sweep_dir.parent),
        failure_config=tune.FailureConfig(max_failures=int(s["max_failures"])),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=int(s["keep_checkpoints"])),
        verbose=int(s.get("verbose", 1)),
    )
    if tune.Tuner.can_restore(str(plan.sweep_dir)):
        return tune.Tuner.restore(str(plan.sweep_dir), trainable(plan), resume_unfinished=True, resume_errored=True, param_space=param_space(plan))
    num_samples = 1 if s["search"] == "grid" else int(s["num_samples"])
    from ray.tune.search.basic_variant import BasicVariantGenerator

    searcher = _searcher(plan)
    # Tune applies max_concurrent_trials to a Searcher; a variant generator takes it itself (above).
    max_concurrent = None if isinstance(searcher, BasicVariantGenerator) else s.get("max_concurrent_trials")
    tune_config = tune.TuneConfig(
        metric=s["metric"], mode=s["mode"], num_samples=num_samples, search_alg=searcher, scheduler=_scheduler(plan),
        max_concurrent_trials=max_concurrent, reuse_actors=plan.workers == 1, trial_dirname_creator=_dirname,
    )
    return tune.Tuner(trainable(plan), param_space=param_space(plan), tune_config=tune_config, run_config=run_config)
