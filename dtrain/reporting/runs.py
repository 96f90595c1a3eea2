"""A finished (or running) run directory as data: its metrics table, summary, wall time per row."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
# Metrics where lower is better; anything else (accuracy, AUROC, coverage, ...) is higher-better.
_LOWER_IS_BETTER = ("loss", "bpc", "perplexity", "distance", "mse", "mae", "rmse", "error", "fid")


@dataclass
class Run:
    path: Path
    label: str
    metrics: pd.DataFrame  # one row per logging step, sorted by step; `seconds` added
    summary: dict = field(default_factory=dict)
    batch_size: int | None = None
    seconds_source: str = ""  # how the `seconds` column was derived (shown on the plots' axes)

    def series(self, name: str) -> pd.DataFrame:
        """The rows where `name` was logged: columns step, seconds, value."""
        if name not in self.metrics:
            return pd.DataFrame({"step": [], "seconds": [], "value": []})
        rows = self.metrics[self.metrics[name].notna()]
        return pd.DataFrame({"step": rows["step"].to_numpy(), "seconds": rows["seconds"].to_numpy(), "value": rows[name].to_numpy(float)})

    def columns(self, prefix: str) -> list[str]:
        return [c for c in self.metrics.columns if c.startswith(prefix) and self.metrics[c].notna().any()]


def lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1].lower()
    return any(word in leaf for word in _LOWER_IS_BETTER)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories under each path: the path itself if it is one, else a Ray Tune sweep's
    `trials/<id>/`, else a Hydra multirun's job folders (`0/`, `1/`, ..., at any depth)."""
    found = []
    for path in map(Path, paths):
        if (path / METRICS_FILE).is_file():
            candidates = [path / METRICS_FILE]
        elif (path / "trials").is_dir():
            candidates = sorted((path / "trials").glob(f"*/{METRICS_FILE}"), key=_natural)
        else:
            candidates = sorted(path.rglob(METRICS_FILE), key=_natural)
        found += [f.parent for f in candidates if f.stat().st_size > 0]  # an empty file: a run that logged nothing yet
    return found


def _natural(path: Path) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts)


def load_run(path: Path, label: str | None = None) -> Run:
    path = Path(path)
    metrics = pd.read_csv(path / METRICS_FILE)
    metrics = metrics.sort_values("step", kind="stable").reset_index(drop=True)
    summary = read_summary(path)
    run = Run(path=path, label=label or path.name, metrics=metrics, summary=summary, batch_size=_batch_size(path))
    metrics["seconds"], run.seconds_source = training_seconds(run)
    return run


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run under `paths`, labelled by its folder and the multirun overrides that set it
    apart from the others (the ones every job shares say nothing)."""
    dirs = find_runs(paths)
    if not dirs:
        return []
    common = Path(*_common_parts([d.resolve() for d in dirs])) if len(dirs) > 1 else dirs[0].resolve().parent
    overrides = [_overrides(d) for d in dirs]
    shared = set.intersection(*map(set, overrides)) if len(dirs) > 1 else set()
    return [load_run(d, _label(d, common, [o for o in own if o not in shared])) for d, own in zip(dirs, overrides)]


def _common_parts(dirs: list[Path]) -> tuple:
    parts = []
    for column in zip(*(d.parts for d in dirs)):
        if len(set(column)) > 1:
            break
        parts.append(column[0])
    return tuple(parts) or ("/",)


def _overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a Hydra job (`.hydra/overrides.yaml`), Hydra's own left out."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return []
    import yaml

    return [o for o in (yaml.safe_load(overrides_file.read_text()) or []) if not o.startswith("hydra.")]


def _label(run_dir: Path, common: Path, overrides: list[str]) -> str:
    name = str(run_dir.resolve().relative_to(common)) if run_dir.resolve() != common else run_dir.name
    if overrides:
        name = f"{name}: {' '.join(overrides)}"
    return name if len(name) <= 60 else name[:57] + "..."


def read_summary(path: Path) -> dict:
    """summary.json (written at the end of fit), or {} while a run has none yet."""
    try:
        return json.loads((Path(path) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _batch_size(path: Path) -> int | None:
    from omegaconf import OmegaConf

    try:
        return int(OmegaConf.load(path / "config.yaml").data.batch_size)
    except Exception:  # no config (a hand-written run) or an interpolation that needs a live run
        return None


def training_seconds(run: Run) -> tuple[np.ndarray, str]:
    """Seconds of training at each row of metrics.csv, and how they were derived.

    metrics.csv has no wall-clock column, so the time is built from what each logging row
    says about the steps since the previous one: `train/step_time_s` when logged, else
    batch size / `train/samples_per_sec`; summed over steps. Validation and checkpointing time
    is therefore left out (the throughput figures exclude it too). Without either column the
    time runs linearly over the steps from config.yaml's to metrics.csv's modification time.
    """
    df = run.metrics
    steps = df["step"].to_numpy(float)
    per_step, source = None, ""
    if "train/step_time_s" in df and df["train/step_time_s"].notna().any():
        per_step, source = df["train/step_time_s"].to_numpy(float), "training s (sum of train/step_time_s)"
    elif "train/samples_per_sec" in df and df["train/samples_per_sec"].notna().any() and run.batch_size:
        per_step, source = run.batch_size / df["train/samples_per_sec"].to_numpy(float), "training s (from train/samples_per_sec)"
    if per_step is None:
        start = (run.path / "config.yaml").stat().st_mtime if (run.path / "config.yaml").exists() else None
        end = (run.path / METRICS_FILE).stat().st_mtime
        span = (end - start) if start is not None and end > start else float("nan")
        last = steps.max() if len(steps) and steps.max() > 0 else 1.0
        return steps / last * span, "wall s (linear in steps between the run's file times)"
    # A logged step time covers the steps since the previous logged one; rows without one (the
    # first of a run or of an epoch, validation rows) are placed by interpolation.
    known = np.isfinite(per_step)
    known_steps, first = np.unique(steps[known], return_index=True)
    known_time = np.cumsum(np.diff(known_steps, prepend=0.0) * per_step[known][first])
    typical = float(np.median(per_step[known]))
    seconds = np.interp(steps, np.r_[0.0, known_steps], np.r_[0.0, known_time])
    after = steps > known_steps[-1]
    seconds[after] = known_time[-1] + (steps[after] - known_steps[-1]) * typical
    return seconds, source


@dataclass
class Convergence:
    metric: str
    best: float
    best_step: float
    best_seconds: float
    steps_to_95: float
    seconds_to_95: float
    final: float
    source: str  # summary.json or metrics.csv


def convergence(run: Run, metric: str) -> Convergence | None:
    """Best validation value, where it was reached, and the steps and seconds to 95% of the way
    to it from the first validation ((m - m0) / (best - m0) >= 0.95). summary.json's values are
    used when it has this metric (its seconds: wall time since training started, validation
    included); metrics.csv's otherwise (runs from before the summary; training time only)."""
    series = run.series(metric)
    if series.empty:
        return None
    final = float(series["value"].iloc[-1])
    name = metric.replace("/", "_")
    if f"summary/best_{name}" in run.summary:  # the run's own record, with wall time since training started
        s = run.summary
        return Convergence(metric, float(s[f"summary/best_{name}"]), *(float(s.get(f"summary/{key}_{name}", np.nan)) for key in (
            "best_step", "best_seconds", "steps_to_95", "seconds_to_95")), final, "summary.json")
    values = series["value"].to_numpy()
    best_index = int(np.argmin(values) if lower_is_better(metric) else np.argmax(values))
    best, first = values[best_index], values[0]
    progress = np.ones_like(values) if best == first else (values - first) / (best - first)
    reached = int(np.argmax(progress >= 0.95))
    return Convergence(
        metric, float(best), float(series["step"].iloc[best_index]), float(series["seconds"].iloc[best_index]),
        float(series["step"].iloc[reached]), float(series["seconds"].iloc[reached]), final, "metrics.csv",
    )
