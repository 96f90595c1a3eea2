"""`python -m dtrain.tune sweep=<name> [train overrides] [space.<key>=<distribution>] [sweep.<key>=...]`."""

import gc
import os
import sys

from dtrain.cli_errors import exit_on_config_error


def prepare(args: list[str]):
    """Everything that can be wrong with the input, found before Ray starts."""
    from dtrain.config.secrets import refuse_literal_secrets
    from dtrain.tune.plan import make_plan, refuse_swept_secrets
    from dtrain.tune.preflight import check_address, check_inputs

    refuse_literal_secrets([a for a in args if not a.startswith("space.")])
    plan = make_plan(args)
    refuse_swept_secrets(plan.space)
    extra = list(plan.settings.get("trial_overrides") or [])
    refuse_literal_secrets([*plan.train_overrides, *extra])  # the sweep file's own, saved in sweep.yaml
    cfg = check_inputs(plan)
    group = f"logger.wandb.group={plan.name}"  # one W&B group per sweep
    if cfg.get("logger") and cfg.logger.get("wandb") is not None and group not in extra:
        extra.append(group)
    plan.settings["trial_overrides"] = extra
    address = plan.settings.get("address") or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        check_address(address)
    return plan, address


def start_ray(plan, address):
    import threading

    import ray

    from dtrain.tune.preflight import check_cluster

    # Tune's imports take seconds: load them while Ray starts.
    imports = threading.Thread(target=_import_tune, daemon=True)
    imports.start()
    # Trials keep the sweep's working directory (relative data paths), not Ray's trial folder.
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "WANDB_SILENT": os.environ.get("WANDB_SILENT", "true"), **_passed_env()}
    if address:  # the cluster's workers were started elsewhere: hand them our environment
        kwargs = {"address": address, "runtime_env": {"env_vars": env}}
    else:  # Ray starts here, and its workers inherit this process's environment
        os.environ.update(env)
        kwargs = {"object_store_memory": int(plan.settings.get("object_store_mb", 512)) * 2**20}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=bool(plan.settings.get("log_to_driver", True)), configure_logging=False)
    check_cluster(plan)
    imports.join()


def _import_tune() -> None:
    import ray.tune.tuner  # noqa: F401

    from dtrain.tune import tuner  # noqa: F401


def _passed_env() -> dict:
    """Variables the trials must see as the driver does (W&B mode, dtrain's own, test hooks).
    Never a secret-named one: Ray keeps a job's runtime environment in its records; a cluster's
    workers get secrets from the environment they were started in."""
    from dtrain.config.secrets import is_secret_key

    return {k: v for k, v in os.environ.items() if k.startswith(("DTRAIN_", "WANDB_MODE", "PYTHONPATH")) and not is_secret_key(k)}


def sweep(args: list[str]) -> int:
    plan, address = prepare(args)
    import ray

    try:
        start_ray(plan, address)
        from dtrain.tune.results import write_results
        from dtrain.tune.trial import trial_overrides
        from dtrain.tune.tuner import build_tuner

        # Tune saves the sweep's state (trials, searcher) at most every 10 s by default, and a
        # restarted sweep knows only what was saved: a trial begun since is lost, a finished one
        # re-run. Saving it every second keeps `sweep.resume=` to what actually happened.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        tuner = build_tuner(plan)
        plan.save()
        print(f"sweep {plan.name}: {plan.sweep_dir} (continue it with: python -m dtrain.tune sweep.resume={plan.sweep_dir})", flush=True)
        results = tuner.fit()
        write_results(plan, results, lambda config, trial_id: trial_overrides(plan, config, trial_id))
        return 1 if any(result.error for result in results) else 0
    finally:
        ray.shutdown()


def main() -> None:
    code = exit_on_config_error(sweep, sys.argv[1:])
    # Ray is shut down: the interpreter's last collections would walk every object Tune left
    # behind (a second here) only to free memory the process returns anyway.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()
