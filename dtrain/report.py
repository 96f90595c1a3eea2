"""PNG plots from run directories: `python -m dtrain.report <run | multirun | sweep dir> ... [--out DIR]`."""

import argparse
import math
from pathlib import Path

from dtrain.config.errors import ConfigError
from dtrain.reporting.runs import Run, load_runs

# What a run logs about its cost, in the order a reader asks: how fast, how well the hardware
# is used, how much memory, where the time goes.
SYSTEM_METRICS = (
    "train/samples_per_sec", "train/tokens_per_sec", "train/mfu", "train/tflops",
    "memory/peak_gib", "train/step_time_s", "train/data_wait_frac",
)
OPTIMIZER_METRICS = ("train/lr", "train/grad_norm")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display, in tests and on clusters
    import matplotlib.pyplot as plt

    return plt


def _grid(panels: int, columns: int, width: float = 5.0, height: float = 3.0):
    plt = _pyplot()
    rows = max(1, math.ceil(panels / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    return fig, axes.ravel()


def _plot(ax, run: Run, name: str, x: str, label: str, color: str | None = None) -> None:
    series = run.series(name)
    marker = "o" if len(series) < 30 else None  # a few validations would otherwise be invisible dots
    ax.plot(series[x].to_numpy(), series["value"].to_numpy(), marker=marker, markersize=3, label=label, color=color)


def _x_label(runs: list[Run], x: str) -> str:
    return "step" if x == "step" else " / ".join(sorted({r.seconds_source for r in runs}))


def curve_names(runs: list[Run]) -> list[str]:
    """Loss first, then the task's validation metrics, then the optimizer's figures."""
    names = ["train/loss", "val/loss"]
    for run in runs:
        names += [c for c in run.columns("val/") if c not in names]
    names += [n for n in OPTIMIZER_METRICS if any(n in r.columns("train/") for r in runs)]
    return [n for n in names if any(n in r.columns(n.split("/")[0] + "/") for r in runs)]


def _same_scale(run: Run, a: str, b: str) -> bool:
    """Whether two metrics can share a y axis (a GAN's val/loss is a distance, not its train/loss)."""
    sizes = [float(run.series(n)["value"].abs().median()) for n in (a, b)]
    return all(size > 0 for size in sizes) and 0.1 <= sizes[0] / sizes[1] <= 10


def curve_panels(run: Run) -> list[tuple[str, list[str]]]:
    """(title, metrics drawn together) for one run: the losses (train and validation on one axis
    when they are alike, a GAN's critic loss with its generator's), each validation metric, the
    learning rate and gradient norm (one line per optimizer)."""
    logged = run.columns("train/") + run.columns("val/")
    train = sorted((c for c in logged if c.startswith("train/") and "loss" in c.rsplit("/", 1)[-1]), key=lambda c: c != "train/loss")
    val = [c for c in ("val/loss",) if c in logged]
    if train and val and _same_scale(run, train[0], val[0]):
        panels = [("loss", train + val)]
    else:
        panels = [(("loss" if len(train) > 1 else train[0]), train)] * bool(train) + [("val/loss", val)] * bool(val)
    panels += [(c, [c]) for c in logged if c.startswith("val/") and c != "val/loss"]
    for base in OPTIMIZER_METRICS:  # train/lr, train/lr_1, ... for a task with several optimizers
        members = [c for c in logged if c == base or (c.startswith(base + "_") and c[len(base) + 1:].isdigit())]
        if members:
            panels.append((base, members))
    return panels


def curves_figure(run: Run):
    """Loss, validation metrics, learning rate and gradient norm, against steps (left) and
    training time (right)."""
    panels = curve_panels(run)
    fig, axes = _grid(2 * len(panels), 2)
    for row, (title, members) in enumerate(panels):
        for column, x in enumerate(("step", "seconds")):
            ax = axes[2 * row + column]
            for name in members:
                _plot(ax, run, name, x, label=name)
            ax.set_title(title)
            ax.set_xlabel(_x_label([run], x))
            if len(members) > 1:
                ax.legend()
    fig.suptitle(run.label)
    fig.tight_layout()
    return fig


def system_figure(run: Run):
    """Throughput, MFU, memory, step time and data wait against training time; None when the
    run logged none of them."""
    names = [n for n in SYSTEM_METRICS if n in run.columns(n.split("/")[0] + "/")]
    if not names:
        return None
    fig, axes = _grid(len(names), 2)
    for ax, name in zip(axes, names):
        _plot(ax, run, name, "seconds", label=name)
        ax.set_title(name)
        ax.set_xlabel(_x_label([run], "seconds"))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(run.label)
    fig.tight_layout()
    return fig


def comparison_figure(runs: list[Run]):
    """One panel per metric, one line per run: curves against steps and training time, the
    cost figures against training time."""
    curves = curve_names(runs)
    system = [n for n in SYSTEM_METRICS if any(n in r.columns(n.split("/")[0] + "/") for r in runs)]
    panels = [(n, x) for n in curves for x in ("step", "seconds")] + [(n, "seconds") for n in system]
    fig, axes = _grid(len(panels), 2, height=3.2)
    for ax, (name, x) in zip(axes, panels):
        for index, run in enumerate(runs):
            if name in run.metrics and run.metrics[name].notna().any():
                _plot(ax, run, name, x, label=run.label, color=_run_color(index, len(runs)))  # a run keeps its colour in every panel
        ax.set_title(name)
        ax.set_xlabel(_x_label(runs, x))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    labels = [run.label for run in runs]
    handles = [Line2D([], [], color=_run_color(i, len(runs))) for i in range(len(runs))]
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize="small", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / math.ceil(len(panels) / 2)))
    return fig


def _run_color(index: int, count: int) -> str:
    """Ten distinct colours for up to ten runs, twenty for more (repeating past twenty)."""
    import matplotlib

    colors = matplotlib.colormaps["tab10" if count <= 10 else "tab20"].colors
    return matplotlib.colors.to_hex(colors[index % len(colors)])


def write_figures(runs: list[Run], out: Path, each: bool = False) -> list[Path]:
    """Write the PNGs for `runs` into `out`: the run's curves and cost for one run; the
    comparison for several (and each run's own with `each`)."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if len(runs) > 1:
        figures.append(("compare.png", comparison_figure(runs)))
    if len(runs) == 1 or each:
        for run in runs:
            prefix = "" if len(runs) == 1 else _file_safe(run.label.split(":")[0]) + "-"
            figures.append((f"{prefix}curves.png", curves_figure(run)))
            figures.append((f"{prefix}system.png", system_figure(run)))
    written = []
    for name, fig in figures:
        if fig is None:
            continue
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def default_out(dirs: list[Path], runs: list[Run]) -> Path:
    """`plots/` inside the one directory given (a run's, a multirun's or a sweep's); with
    several directories, `plots/` where the command runs."""
    return dirs[0] / "plots" if len(dirs) == 1 else Path("plots")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m dtrain.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories, multirun directories or Ray Tune sweep directories")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: <dir>/plots, or ./plots for several dirs)")
    parser.add_argument("--each", action="store_true", help="with several runs, also write each run's own figures")
    args = parser.parse_args(argv)
    for path in args.dirs:
        if not path.is_dir():
            raise ConfigError(str(path), "no such directory; give a run, multirun or sweep directory")
    runs = load_runs(args.dirs)
    if not runs:
        raise ConfigError(" ".join(map(str, args.dirs)), "holds no run (no metrics.csv in it or its trials/job folders)")
    written = write_figures(runs, args.out or default_out(args.dirs, runs), each=args.each)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    from dtrain.cli_errors import exit_on_config_error

    exit_on_config_error(main)
