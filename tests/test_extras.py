"""An option that needs an optional dependency (pyproject's extras) which is not installed ends in
one line naming the option and `pip install 'dtrain[<extra>]'`. Missing packages are simulated
with `sys.modules[name] = None`, which makes `import name` fail as if it were not installed."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate

from dtrain.config.compose import compose
from dtrain.config.errors import ConfigError
from tests.conftest import child_env


def config_error(build) -> ConfigError:
    """The ConfigError `build()` raises (Hydra's instantiate wraps what a constructor raises)."""
    with pytest.raises(Exception) as raised:
        build()
    error = raised.value if isinstance(raised.value, ConfigError) else raised.value.__cause__
    assert isinstance(error, ConfigError), repr(raised.value)
    return error


@pytest.mark.parametrize(
    "overrides, build, missing, extra, key",
    [
        (["model=gcn"], lambda cfg: instantiate(cfg.data), ["torch_geometric"], "graph", "data=graph"),
        (["model=lstm"], lambda cfg: instantiate(cfg.data).series, ["statsmodels"], "timeseries", "data.dataset=sunspots"),
        (["logger=[tensorboard]"], lambda cfg: instantiate(cfg.logger.tensorboard), ["tensorboard", "tensorboardX"], "tensorboard", "logger.tensorboard"),
        (["trainer=deepspeed_zero2"], lambda cfg: instantiate(cfg.trainer.strategy), ["deepspeed"], "deepspeed", "trainer=deepspeed_zero2"),
        (["trainer=deepspeed_zero3_offload"], lambda cfg: instantiate(cfg.trainer.strategy), ["deepspeed"], "deepspeed", "trainer=deepspeed_zero3_offload"),
    ],
    ids=["graph-data", "timeseries-data", "tensorboard-logger", "deepspeed-trainer", "deepspeed-offload-trainer"],
)
def test_missing_extra_is_one_line_naming_option_and_extra(monkeypatch, tmp_path, overrides, build, missing, extra, key):
    cfg = compose(overrides, run_dir=tmp_path)
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)
    error = config_error(lambda: build(cfg))
    assert error.key == key
    flags = "--no-build-isolation " if extra == "deepspeed" else ""  # DeepSpeed builds against the installed torch
    assert str(error) == f"{key}: needs {' or '.join(missing)}, which is not installed: pip install {flags}'dtrain[{extra}]'"


def test_graph_net_names_its_option(monkeypatch):
    from dtrain.nets.gnn import GNN

    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    assert config_error(lambda: GNN(4, 2, conv="gat")).key == "model/net=gat"


def test_a_series_from_a_csv_needs_no_statsmodels(monkeypatch, tmp_path):
    (tmp_path / "series.csv").write_text("t,value\n" + "".join(f"{t},{t % 7}\n" for t in range(200)))
    cfg = compose(["model=lstm", f"data.path={tmp_path / 'series.csv'}"], run_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "statsmodels", None)
    assert len(instantiate(cfg.data).series) == 200


def test_installed_module_failing_inside_is_not_reported_as_missing(monkeypatch, tmp_path):
    """A package that is there but lacks one of its own imports keeps its traceback."""
    from dtrain.extras import require

    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import a_dependency_it_lacks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_it_lacks"):
        require("graph", "half_installed", "data=graph")


def test_command_line_exits_2_with_the_one_line(tmp_path):
    script = (
        "import sys; sys.modules['torch_geometric'] = None; "
        "sys.argv = ['dtrain', 'model=gcn', 'budget=smoke', 'logger=[csv]', 'trainer.enable_progress_bar=false']; "
        "from dtrain.__main__ import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=child_env(DTRAIN_RUNS_DIR=str(tmp_path / "runs")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "dtrain: error: data=graph: needs torch_geometric, which is not installed: pip install 'dtrain[graph]'"
