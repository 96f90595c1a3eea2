"""Every mistake a sweep's input can hold, found before Ray starts or any trial runs."""

import difflib
import os
import socket

from omegaconf import DictConfig, OmegaConf

from dtrain.config.compose import CONF_DIR
from dtrain.config.errors import ConfigError
from dtrain.tune.plan import Plan
from dtrain.tune.tuner import check_algorithms

# What each task logs at validation (dtrain/tasks/); a user's own task is not checked.
VAL_METRICS = {
    "Classification": ("loss", "acc", "precision", "recall", "f1", "auroc"),
    "Regression": ("loss", "mse", "mae", "r2"),
    "LanguageModel": ("loss", "bpc", "bits_per_token", "perplexity"),
    "MaskedLanguageModel": ("loss", "masked_acc"),
    "Seq2Seq": ("loss", "token_acc", "exact_match"),
}


def _keys(node, prefix="") -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in [f"{prefix}{key}", *_keys(value, f"{prefix}{key}.")]]
    return []


def check_swept_keys(plan: Plan, cfg: DictConfig) -> None:
    tree = OmegaConf.to_container(cfg, resolve=False)
    known = _keys(tree)
    for dim in plan.dimensions:
        if dim.is_group:
            options = sorted(p.stem for p in (CONF_DIR / dim.key).glob("*.yaml"))
            if not options:
                raise ConfigError(f"space.{dim.key}", f"no config group {dim.key} in {CONF_DIR}")
            for value in dim.args:
                if str(value) not in options:
                    raise ConfigError(f"space.{dim.key}", f"no option {value!r}; choose from {', '.join(options)}")
            continue
        if dim.key not in known:
            hint = difflib.get_close_matches(dim.key, known, n=1, cutoff=0.6)
            did_you_mean = f"did you mean {hint[0]}? " if hint else ""
            raise ConfigError(f"space.{dim.key}", f"not a key of the training config; {did_you_mean}(swept keys must exist: check `python -m dtrain --cfg job`)")


def check_metric(plan: Plan, cfg: DictConfig) -> None:
    metric = str(plan.settings["metric"])
    task = str(cfg.model.get("_target_", "")).rpartition(".")[2]
    logged = VAL_METRICS.get(task)
    if logged is None:
        return
    names = [f"val/{name}" for name in logged]
    if metric not in names:
        raise ConfigError("sweep.metric", f"{task} never logs {metric!r}; it logs {', '.join(names)}")


def check_resources(plan: Plan, cfg: DictConfig) -> None:
    r = plan.settings["resources"]
    workers = r["workers"]
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError("sweep.resources.workers", f"expected a positive integer, got {workers!r}")
    devices = cfg.trainer.get("devices", 1)
    if workers == 1 and not (isinstance(devices, int) and devices <= 1):
        raise ConfigError("trainer.devices", f"a trial of one process cannot use devices={devices}; for data-parallel trials set sweep.resources.workers={devices if isinstance(devices, int) else 2} (and keep trainer.devices=1)")
    if workers > 1 and isinstance(devices, int) and devices > 1:
        raise ConfigError("trainer.devices", "each Ray Train worker is one process: keep trainer.devices=1 and set sweep.resources.workers")
    gpus = float(r["gpus_per_worker"] or 0)
    if workers > 1 and 0 < gpus < 1:
        raise ConfigError("sweep.resources.gpus_per_worker", "fractional GPUs are for single-worker trials; give each worker a whole GPU")
    if workers > 1 and not gpus:
        from dtrain.tune.trial import ray_strategy_name

        strategy = ray_strategy_name(cfg.trainer)
        if strategy != "RayDDPStrategy":
            raise ConfigError("trainer.strategy", f"Ray runs {strategy} on GPUs only; set sweep.resources.gpus_per_worker=1 or use trainer=cpu (ddp) for CPU workers")


def check_inputs(plan: Plan) -> DictConfig:
    """Compose one trial's base config (the swept keys at their defaults) and check the plan against it."""
    from dtrain.config.compose import compose
    from dtrain.config.validate import validate

    check_algorithms(plan)
    cfg = compose(plan.train_overrides, run_dir=plan.sweep_dir / "trials" / "preflight")
    validate(cfg)
    check_swept_keys(plan, cfg)
    check_metric(plan, cfg)
    check_resources(plan, cfg)
    check_max_t(plan, cfg)
    return cfg


def check_max_t(plan: Plan, cfg: DictConfig) -> None:
    """ASHA's and PBT's time is the number of reports (validations); by default the epoch count."""
    scheduler = plan.settings["scheduler"]
    if scheduler.get("max_t") is None:
        epochs = cfg.trainer.get("max_epochs", -1)
        if not isinstance(epochs, int) or epochs < 1 or cfg.trainer.get("val_check_interval") not in (None, 1.0):
            raise ConfigError("sweep.scheduler.max_t", "set it to the number of validations a full trial runs (it is trainer.max_epochs only for one validation per epoch)")
        scheduler["max_t"] = epochs
    if not isinstance(scheduler["max_t"], int) or scheduler["max_t"] < 1:
        raise ConfigError("sweep.scheduler.max_t", f"expected a positive integer, got {scheduler['max_t']!r}")


def check_address(address: str, timeout: float = 3.0) -> None:
    """An unreachable head fails here in seconds (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as error:
        raise ConfigError("sweep.address", f"cannot reach a Ray head at {address} ({error}); start one (launchers/ray/start_head.sh) or drop sweep.address to run on this machine") from None


def check_cluster(plan: Plan) -> None:
    """After ray.init: the trials fit the cluster, and every node sees the sweep directory."""
    import ray

    total = ray.cluster_resources()
    r = plan.settings["resources"]
    need_cpu = plan.workers * float(r["cpus_per_worker"]) + (0.1 if plan.workers > 1 else 0)
    need_gpu = plan.workers * float(r["gpus_per_worker"] or 0)
    have_cpu, have_gpu = total.get("CPU", 0), total.get("GPU", 0)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        raise ConfigError(
            "sweep.resources.workers",
            f"a trial needs {need_cpu:g} CPU(s) and {need_gpu:g} GPU(s), the whole cluster has {have_cpu:g} and {have_gpu:g}; lower workers/cpus_per_worker or add nodes",
        )
    check_shared_storage(plan)


def check_shared_storage(plan: Plan) -> None:
    """On several nodes, each must see the sweep directory: a marker the driver writes is read by a task on every node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if len(nodes) <= 1:
        return
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    marker = plan.sweep_dir / ".storage_check"
    token = os.urandom(8).hex()
    marker.write_text(token)

    @ray.remote(num_cpus=0)
    def sees(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    try:
        seen = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker)) for n in nodes], timeout=60)
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, text in zip(nodes, seen) if text != token]
    if blind:
        raise ConfigError("sweep.storage_path", f"{plan.sweep_dir.parent} is not visible from node(s) {', '.join(blind)}; on a multi-node cluster use a shared filesystem path every node mounts")
