"""What a finished sweep leaves a user: the trial table (results.csv), the compute it used, and
the best trial as an experiment file (experiment/best.yaml) that `python -m dtrain` reproduces."""

from pathlib import Path

import yaml

from dtrain.config.compose import CONF_DIR
from dtrain.tune.plan import Plan

RESULTS_FILE = "results.csv"
BEST_FILE = "experiment/best.yaml"
_TRIAL_ONLY = ("+callbacks.tune_report", "+callbacks.optimizer_config", "logger.wandb.group", "trainer.enable_progress_bar")


def trial_rows(plan: Plan, result_grid) -> list[dict]:
    metric, max_t = plan.settings["metric"], int(plan.settings["scheduler"]["max_t"])
    rows = []
    for result in result_grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name.removeprefix("ray_")
        # The trial's own count of reports (dtrain.tune.report): after a restored sweep, Tune's
        # training_iteration counts on from the state it last saved, which can lag behind.
        iterations = int(metrics.get("reports", metrics.get("training_iteration", 0)))
        status = "error" if result.error else ("done" if iterations >= max_t else "stopped early")
        row = {"trial": trial_id}
        for dim in plan.dimensions:
            row[dim.key] = (result.config or {}).get(dim.param)
        row.update({metric: metrics.get(metric), "epochs": iterations, "status": status, "seconds": round(float(metrics.get("time_total_s", 0.0)), 1)})
        rows.append(row)
    return rows


def compute_summary(plan: Plan, rows: list[dict]) -> dict:
    """Compute used against the full figure: every trial run for max_t at its own seconds per epoch."""
    r, max_t = plan.settings["resources"], int(plan.settings["scheduler"]["max_t"])
    cpus = plan.workers * float(r["cpus_per_worker"])
    gpus = plan.workers * float(r["gpus_per_worker"] or 0)
    epochs = sum(row["epochs"] for row in rows)
    seconds = sum(row["seconds"] for row in rows)
    full_seconds = sum(max_t * row["seconds"] / row["epochs"] for row in rows if row["epochs"])
    return {
        "trials": len(rows), "trial_epochs": epochs, "full_trial_epochs": max_t * len(rows),
        "cpu_seconds": round(seconds * cpus, 1), "full_cpu_seconds": round(full_seconds * cpus, 1),
        "gpu_seconds": round(seconds * gpus, 1), "full_gpu_seconds": round(full_seconds * gpus, 1),
    }


def best_row(plan: Plan, rows: list[dict]) -> dict | None:
    metric, sign = plan.settings["metric"], 1 if plan.settings["mode"] == "min" else -1
    scored = [row for row in rows if row[metric] is not None]
    return min(scored, key=lambda row: sign * row[metric]) if scored else None


def experiment_from_overrides(overrides: list[str]) -> dict:
    """An experiment file (`# @package _global_`) that sets what these command-line overrides set."""
    groups = {p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*") if p.is_dir()}
    defaults, values = {}, {}
    for override in overrides:
        if override.startswith(_TRIAL_ONLY):
            continue
        key, _, text = override.partition("=")
        key = key.lstrip("+")
        if key in groups:
            defaults[f"override /{key}"] = yaml.safe_load(text)  # the last choice wins, as on the command line
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return {"defaults": [{k: v} for k, v in defaults.items()], **values} if defaults else values


def write_results(plan: Plan, result_grid, trial_overrides_of) -> dict:
    import pandas as pd

    rows = trial_rows(plan, result_grid)
    table = pd.DataFrame(rows)
    table.to_csv(plan.sweep_dir / RESULTS_FILE, index=False)
    summary = compute_summary(plan, rows)
    best = best_row(plan, rows)
    print(table.to_string(index=False))
    print(
        f"compute: {summary['trial_epochs']} of {summary['full_trial_epochs']} trial-epochs, "
        f"{summary['cpu_seconds']:g} of {summary['full_cpu_seconds']:g} CPU-seconds"
        + (f", {summary['gpu_seconds']:g} of {summary['full_gpu_seconds']:g} GPU-seconds" if summary["full_gpu_seconds"] else "")
    )
    if best is not None:
        result = next(r for r in result_grid if Path(r.path).name == f"ray_{best['trial']}")
        experiment = experiment_from_overrides(trial_overrides_of(result.config, best["trial"]))
        path = plan.sweep_dir / BEST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# @package _global_\n# Best trial {best['trial']} of sweep {plan.name}: {plan.settings['metric']}={best[plan.settings['metric']]}\n"
        if plan.settings["scheduler"]["name"] == "pbt":
            header += "# PBT: these are the trial's final values; it got there by a schedule (trials/<id>/pbt_schedule.jsonl).\n"
        path.write_text(header + yaml.safe_dump(experiment, sort_keys=False))
        print(f"best: trial {best['trial']} {plan.settings['metric']}={best[plan.settings['metric']]:.4f}; reproduce with")
        print(f"  python -m dtrain hydra.searchpath=[file://{plan.sweep_dir}] experiment=best")
    print(f"sweep directory: {plan.sweep_dir}")
    return {"rows": rows, "summary": summary, "best": best}
