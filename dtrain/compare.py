"""`python -m dtrain.compare`: the architecture families' cost measured on this machine, as a
Markdown table and a PNG (compare.mode=families), or step time against sequence length
(compare.mode=seq_len)."""

import json
import math
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError

MODES = ("families", "seq_len")


@hydra.main(version_base="1.3", config_path="conf", config_name="compare")
def hydra_main(cfg: DictConfig) -> None:
    from dtrain.cli_errors import exit_on_config_error

    exit_on_config_error(compare, cfg)


def compare(cfg: DictConfig) -> list[Path]:
    """Run the comparison `cfg.compare` asks for in `cfg.paths.run_dir`; return the files written."""
    spec = cfg.compare
    if spec.mode not in MODES:
        raise ConfigError("compare.mode", f"{spec.mode!r} is no mode; choose one of: {', '.join(MODES)}")
    out = Path(cfg.paths.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m dtrain.compare", *cfg_overrides()])
    written = families(spec, out, command) if spec.mode == "families" else seq_len(spec.seq_len, out, command)
    for path in written:
        print(path)
    return written


def cfg_overrides():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().overrides.task if HydraConfig.initialized() else []


@contextmanager
def outside_hydra() -> Iterator[None]:
    """Let dtrain's compose() start its own Hydra while this app's is running (Hydra allows one
    at a time); this app's is put back afterwards, as Hydra's own initialize() does."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    saved = Singleton._instances.pop(GlobalHydra, None)
    try:
        yield
    finally:
        Singleton._instances.pop(GlobalHydra, None)
        if saved is not None:
            Singleton._instances[GlobalHydra] = saved


def machine() -> str:
    import torch

    # The load average says how much other work shared the machine while it was measured.
    return (f"{platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the start), "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))


# -- families ---------------------------------------------------------------------------------

COLUMNS = (  # (header, FamilyRow field, format)
    ("family", "family", "{}"),
    ("params", "params", "{:,.0f}"),
    ("FLOPs/sample", "flops_per_sample", "{:.3g}"),
    ("samples/s", "samples_per_sec", "{:,.0f}"),
    ("peak mem GiB", "peak_memory_gib", "{:.2f}"),
    ("MFU", "mfu", "{:.2g}"),
    ("train s", "train_seconds", "{:.1f}"),
    ("run s", "run_seconds", "{:.0f}"),
    ("steps to 95%", "steps_to_95", "{:.0f}"),
    ("s to 95%", "seconds_to_95", "{:.1f}"),
    ("metric", "metric", "{}"),
    ("best", "best", "{:.4g}"),
    ("final val", "final", "{:.4g}"),
    ("test", "test", "{:.4g}"),
)


SECONDS_TO_95 = {
    "summary.json": "s to 95%: wall time since training started, validation included (summary.json)",
    "metrics.csv": "s to 95%: training time by metrics.csv (no summary.json)",
}


def families(spec, out: Path, command: str) -> list[Path]:
    from dtrain.config.compose import compose
    from dtrain.config.validate import check_devices, validate
    from dtrain.reporting.families import family_overrides, steps_for_batches, train_families

    cfgs = {}
    with outside_hydra():  # every family composed and checked before anything trains
        for family in spec.models:
            try:
                cfgs[family] = compose(family_overrides(spec, family), run_dir=out / family)
            except ConfigError as error:
                raise ConfigError(error.key, f"{str(error)[len(error.key) + 2:]} (family {family} of compare.models)") from None
            cfgs[family].trainer.max_steps = steps_for_batches(cfgs[family], spec.budget)
            validate(cfgs[family])
            check_devices(cfgs[family].trainer)
    where = machine()
    rows = train_families(spec, out, cfgs)
    (out / "compare.json").write_text(json.dumps([row.as_dict() for row in rows], indent=2))
    table = families_markdown(rows)
    missing = [header for header, name, _ in COLUMNS if all(_cell(getattr(r, name), "{}") == "" for r in rows)]
    notes = [
        f"`{command}`, {spec.budget} training batches each (validation every {spec.val_every} on {spec.limit_val_batches} batches), on {where}.",
        "samples/s, MFU: medians over the logging steps; train s: training time by metrics.csv (the logged "
        "step times summed, validation excluded); run s: the whole run (data, fit with validation, test).",
        "steps to 95%: the first validation at least 95% of the way from the first validation's value to the best; "
        + "; ".join(sorted({SECONDS_TO_95[r.convergence_source] for r in rows if r.convergence_source})) + ".",
    ]
    if missing:
        notes.append(f"Empty columns ({', '.join(missing)}): the runs' summary.json and metrics.csv do not record them yet.")
    if any(r.params_source == "checkpoint" for r in rows):
        notes.append("params: counted from last.ckpt's state dict (no summary.json yet); a GAN's counts generator and critic.")
    failed = [f"{r.family}: {r.error}" for r in rows if r.error]
    if failed:
        notes.append("Failed: " + "; ".join(failed) + " (see <run dir>/train.log).")
    markdown = "\n".join([table, "", *notes, ""])
    (out / "compare.md").write_text(markdown)
    print(markdown)
    png = out / "compare.png"
    save_families_figure(rows, png)
    return [out / "compare.md", out / "compare.json", png]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return ""
    return fmt.format(value)


def families_markdown(rows) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(getattr(row, name), fmt) for _, name, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def families_figure(rows):
    """Bars per family for each cost (one bar per family), and each family's progress towards
    its best validation value against training time."""
    from dtrain.report import _grid
    from dtrain.reporting.runs import load_run

    bars = [("params", "params"), ("FLOPs/sample", "flops_per_sample"), ("samples/s", "samples_per_sec"),
            ("peak mem GiB", "peak_memory_gib"), ("MFU", "mfu"), ("s to 95%", "seconds_to_95")]
    fig, axes = _grid(len(bars) + 1, 2, width=5.5, height=3.0)
    names = [r.family for r in rows]
    for ax, (title, field) in zip(axes, bars):
        values = [math.nan if v is None else float(v) for v in (getattr(r, field) for r in rows)]
        known = [v for v in values if not math.isnan(v)]
        drawn = ax.bar(names, [0.0 if math.isnan(v) else v for v in values])
        ax.bar_label(drawn, labels=["" if math.isnan(v) else f"{v:.3g}" for v in values], fontsize="small")
        if not known:
            ax.text(0.5, 0.5, "not recorded yet", transform=ax.transAxes, ha="center", va="center")
            ax.set_yticks([])
        elif min(known) > 0 and max(known) / min(known) > 30:  # families differ by orders of magnitude
            ax.set_yscale("log")
        ax.margins(y=0.15)  # room for the value labels
        ax.set_title(title)
    ax = axes[len(bars)]
    for row in rows:
        if row.error and not Path(row.run_dir, "metrics.csv").is_file():
            continue
        series = load_run(Path(row.run_dir), row.family).series(row.metric)
        if len(series) and not math.isnan(row.best) and row.best != series["value"].iloc[0]:
            progress = (series["value"] - series["value"].iloc[0]) / (row.best - series["value"].iloc[0])
            ax.plot(series["seconds"], progress, marker="o", markersize=3, label=f"{row.family} ({row.metric})")
    ax.axhline(0.95, color="grey", linestyle=":")
    ax.set_title("progress to best validation value")
    ax.set_xlabel("training s")
    ax.legend(fontsize="small")
    for extra in axes[len(bars) + 1:]:
        extra.set_visible(False)
    fig.tight_layout()
    return fig


def save_families_figure(rows, path: Path) -> None:
    from dtrain.report import _pyplot

    fig = families_figure(rows)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


# -- sequence length --------------------------------------------------------------------------

def seq_len(spec, out: Path, command: str) -> list[Path]:
    from dtrain.reporting.seq_len import time_steps

    where = machine()
    with outside_hydra():
        specs = {m: list(spec.net_overrides.get(m, [])) for m in spec.models}
        results = time_steps(specs, list(spec.lengths), spec.batch_size, spec.steps)
    (out / "seq_len.json").write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
    notes = [
        f"`{command}`, batch {spec.batch_size}, the fastest of {spec.steps} interleaved training steps "
        f"(forward, backward, AdamW) per cell (medians in seq_len.json), on {where}.",
        "Nets: " + "; ".join(f"{r.model} ({r.params:,} params{', ' + ' '.join(spec.net_overrides.get(r.model, [])) if spec.net_overrides.get(r.model) else ''})" for r in results) + ".",
        "Exponent k: least-squares fit of step time ~ L^k, over all lengths and over the three longest.",
    ]
    markdown = "\n".join([seq_len_markdown(results), "", *notes, ""])
    (out / "seq_len.md").write_text(markdown)
    print(markdown)
    png = out / "seq_len.png"
    from dtrain.report import _pyplot

    fig = seq_len_figure(results)
    fig.savefig(png, dpi=100)
    _pyplot().close(fig)
    return [out / "seq_len.md", out / "seq_len.json", png]


def seq_len_markdown(results) -> str:
    first = results[0]
    header = ["length"] + [f"{r.model} ms/step" for r in results] + [f"{r.model} / {first.model}" for r in results[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, length in enumerate(first.lengths):
        times = [f"{1e3 * r.step_seconds[i]:.1f}" for r in results]
        ratios = [f"{r.step_seconds[i] / first.step_seconds[i]:.2f}" for r in results[1:]]
        lines.append("| " + " | ".join([str(length), *times, *ratios]) + " |")
    for label, field in (("exponent k (all)", "exponent"), ("exponent k (3 longest)", "exponent_long")):
        lines.append("| " + " | ".join([label, *(f"{getattr(r, field):.2f}" for r in results), *([""] * (len(results) - 1))]) + " |")
    return "\n".join(lines)


def seq_len_figure(results):
    """Step time against length on log-log axes, one line per model, its exponent in the legend."""
    from dtrain.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in results:
        ax.plot(r.lengths, [1e3 * s for s in r.step_seconds], marker="o", label=f"{r.model}: k={r.exponent:.2f} (longest: {r.exponent_long:.2f})")
    lengths = results[0].lengths
    base = 1e3 * min(r.step_seconds[0] for r in results)
    for k, style in ((1, "--"), (2, ":")):  # reference slopes from the fastest model's first point
        ax.plot(lengths, [base * (n / lengths[0]) ** k for n in lengths], color="grey", linestyle=style, linewidth=1, label=f"~L^{k}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("ms per training step")
    ax.set_title("training step time against sequence length")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def main() -> None:
    from dtrain.__main__ import refuse_secrets
    from dtrain.cli_errors import exit_on_config_error

    sys.argv[0] = "dtrain.compare"
    exit_on_config_error(refuse_secrets, sys.argv[1:])  # before Hydra saves the command line in .hydra/
    hydra_main()


if __name__ == "__main__":
    main()
