"""Convergence summary: each validation metric's best value, the step and wall time it was
reached, and the steps and time to 95% of the way there from the first validation."""

import math
import time

from dtrain.perf.part import RecordPart
from dtrain.perf.steps import logged_step

# Validation metrics that improve downwards; everything else (accuracy, F1, AUROC, R^2,
# coverage, exact match) improves upwards.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "perplexity", "bpc", "distance", "error", "nll", "fid")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.rsplit("/", 1)[-1] for word in _LOWER_IS_BETTER)


def metric_summary(points: list[tuple[int, float, float]], minimise: bool, fraction: float = 0.95) -> dict:
    """From (step, seconds, value) of each validation: the best value, where it was reached, and
    where (m - m0) / (best - m0) first reached `fraction`, m0 the first validation's value
    (the same rule for losses and accuracies; a metric that never improved is there at once)."""
    points = [p for p in points if math.isfinite(p[2])]
    if not points:
        return {}
    best_at = (min if minimise else max)(range(len(points)), key=lambda i: points[i][2])
    first, best = points[0][2], points[best_at][2]
    reached = next(i for i, p in enumerate(points) if best == first or (p[2] - first) / (best - first) >= fraction)
    return {
        "best": best, "best_step": points[best_at][0], "best_seconds": points[best_at][1],
        "steps_to_95": points[reached][0], "seconds_to_95": points[reached][1],
    }


def convergence_summary(history: list[dict], monitor: str | None, monitor_mode: str | None) -> dict:
    """The summary's `summary/...` keys for every validation metric in `history` (rows of step,
    seconds and metric values), and the monitored metric's without a suffix."""
    summary = {}
    metrics = sorted({key for row in history for key in row if key.startswith("val/")})
    for metric in metrics:
        minimise = monitor_mode == "min" if metric == monitor and monitor_mode else lower_is_better(metric)
        found = metric_summary([(row["step"], row["seconds"], row[metric]) for row in history if metric in row], minimise)
        if not found:
            continue
        name = metric.replace("/", "_")
        summary[f"summary/best_{name}"] = found.pop("best")
        summary.update({f"summary/{key}_{name}": value for key, value in found.items()})
        if metric == monitor:
            summary.update({f"summary/{key}": value for key, value in found.items()})
    if monitor in metrics:
        summary["summary/monitor"] = monitor
    summary["summary/validations"] = len(history)
    return summary


class Convergence(RecordPart):
    """Records every validation of the fit (not the sanity check) with its step (as in
    metrics.csv) and wall time since training started, counting the time before a resume."""

    def __init__(self):
        self.history: list[dict] = []
        self._seconds_before = 0.0
        self._start: float | None = None

    def train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def seconds(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def validation_end(self, trainer, pl_module) -> None:
        values = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                values[key] = float(value)
        if values:
            self.history.append({"step": logged_step(trainer), "seconds": self.seconds(), **values})

    def summary(self, trainer, pl_module) -> dict:
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None) or "val/loss"
        return convergence_summary(self.history, monitor, getattr(checkpoint, "mode", None))

    def state_dict(self) -> dict:
        return {"history": self.history, "seconds": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        self.history, self._seconds_before = state.get("history", []), state.get("seconds", 0.0)
