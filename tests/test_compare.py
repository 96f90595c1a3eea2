"""python -m dtrain.compare: the families' table holds each run's own numbers; the sequence-length
mode measures growth and fits its exponent."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from dtrain.reporting.runs import read_summary
from dtrain.reporting.seq_len import growth_exponents
from tests.conftest import child_env

# Columns neither a run's summary.json nor its metrics.csv have until every run records them.
RECORDED_LATER = {"flops_per_sample": "flops_per_sample", "peak_memory_gib": "memory/peak_gib", "mfu": "train/mfu"}


def compare_cli(*overrides: str, out, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dtrain.compare", *overrides, f"hydra.run.dir={out}"],
        env=child_env(WANDB_MODE="offline"), capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_families_table_holds_each_runs_numbers(tmp_path):
    out = tmp_path / "compare"
    result = compare_cli("compare.models=[cnn,gru]", "compare.budget=24", "compare.val_every=8", "compare.log_every=4", out=out)

    assert result.stdout.strip().splitlines()[-3:] == [str(out / name) for name in ("compare.md", "compare.json", "compare.png")]
    rows = {row["family"]: row for row in json.loads((out / "compare.json").read_text())}
    assert list(rows) == ["cnn", "gru"]
    for family, row in rows.items():
        run_dir = out / family
        summary, logged = read_summary(run_dir), pd.read_csv(run_dir / "metrics.csv")
        assert not row["error"]
        for field, value in row.items():
            if field in RECORDED_LATER and RECORDED_LATER[field] not in summary and RECORDED_LATER[field] not in logged:
                assert value is None, f"{family}.{field} has no source yet but shows {value}"
            elif field not in ("error",):
                assert value not in (None, ""), f"{family}.{field} is empty"

        sps = summary.get("train/samples_per_sec", logged["train/samples_per_sec"].median())
        assert math.isclose(row["samples_per_sec"], sps, rel_tol=1e-6)
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        assert row["params"] == summary.get("params", sum(t.numel() for k, t in state.items() if t.is_floating_point() and "running_" not in k))
        metric = row["metric"]
        assert metric == {"cnn": "val/acc", "gru": "val/loss"}[family]
        validations = logged[["step", metric]].dropna()
        assert row["final"] == validations[metric].iloc[-1]
        assert row["best"] == (validations[metric].max() if metric == "val/acc" else validations[metric].min())
        # 95% of the way from the first validation to the best: reached at steps_to_95, not before.
        progress = (validations[metric] - validations[metric].iloc[0]) / (row["best"] - validations[metric].iloc[0])
        reached = validations["step"][progress >= 0.95]
        assert row["steps_to_95"] == reached.iloc[0]
        assert row["test"] == logged["test/" + metric.split("/")[1]].dropna().iloc[-1]
        name = metric.replace("/", "_")
        if f"summary/best_{name}" in summary:  # the run's own record: wall time, validation included
            assert row["seconds_to_95"] == summary[f"summary/seconds_to_95_{name}"]
            assert row["best"] == summary[f"summary/best_{name}"]
        else:
            assert row["seconds_to_95"] <= row["train_seconds"]
        assert 0 < row["seconds_to_95"] < row["run_seconds"] and row["train_seconds"] < row["run_seconds"]

    table = (out / "compare.md").read_text().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    for line in table[2:4]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        later = {"FLOPs/sample": "flops_per_sample", "peak mem GiB": "peak_memory_gib", "MFU": "mfu"}
        assert all(value or (name in later and rows[cells["family"]][later[name]] is None) for name, value in cells.items()), cells
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_seq_len_step_time_grows_with_length_and_has_an_exponent(tmp_path):
    out = tmp_path / "seq_len"
    compare_cli("compare.mode=seq_len", "compare.seq_len.models=[transformer,lstm]", "compare.seq_len.lengths=[32,128,512]",
                "compare.seq_len.steps=3", out=out)

    results = {r["model"]: r for r in json.loads((out / "seq_len.json").read_text())}
    assert list(results) == ["transformer", "lstm"]
    for result in results.values():
        assert result["lengths"] == [32, 128, 512]
        assert result["step_seconds"][-1] > result["step_seconds"][0]  # 16x longer sequences cost more
        assert 0 < result["exponent"] < 3 and math.isfinite(result["exponent_long"])
    table = (out / "seq_len.md").read_text()
    assert "| 512 |" in table and "exponent k (all)" in table
    assert (out / "seq_len.png").read_bytes().startswith(b"\x89PNG")


def test_growth_exponent_of_known_curves():
    lengths = [64, 128, 256, 512]
    assert np.allclose(growth_exponents(lengths, [n**2 * 1e-6 for n in lengths]), 2.0)
    linear_then_quadratic = [1e-3 * n + 1e-6 * n**2 for n in lengths]
    overall, longest = growth_exponents(lengths, linear_then_quadratic)
    assert 1.0 < overall < longest < 2.0


def test_an_unknown_family_is_one_line_before_anything_trains(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dtrain.compare", "compare.models=[cnn,trnsformer]", f"hydra.run.dir={tmp_path / 'out'}"],
        env=child_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dtrain: error: model=trnsformer: no such option; did you mean model=transformer?")
    assert line.endswith("(family trnsformer of compare.models)")
    assert not (tmp_path / "out" / "cnn").exists()  # cnn was not trained first
