"""Secrets stay secret (issue 11, item 7): a secret typed as a literal is refused before Hydra
writes anything, on every way in; one that comes from the environment reaches no file of the run,
no logger, no job script, no Ray record and not the console."""

import sys
from pathlib import Path

import pytest

from dtrain.config.errors import ConfigError
from dtrain.config.secrets import REDACTED, is_secret_key, redacted, refuse_literal_secrets
from tests.conftest import dtrain_cli

PLANTED = "sk-PLANTED123"  # typed on a command line
ENV_SECRET = "planted-env-secret-XYZ"  # given through ${oc.env:DTRAIN_TEST_SECRET}
WANDB_KEY = "planted-wandb-XYZ"  # W&B's own variable
FROM_ENV = "${oc.env:DTRAIN_TEST_SECRET}"
SWEEP = ["sweep=mlp_smoke", "logger=[csv,wandb]", "space.model.optimizer.lr=loguniform(1e-4,1e-2)"]


@pytest.mark.parametrize(
    "name, secret",
    [
        ("api_key", True), ("logger.wandb.api_key", True), ("token", True), ("password", True), ("secret", True),
        ("WANDB_API_KEY", True), ("hf_token", True), ("+data.db_password", True), ("client_secret", True), ("model/token", True),
        ("tokenizer", False), ("data.tokenizer", False), ("mask_token", False), ("pad_token", False), ("bos_token", False),
        ("eos_token", False), ("cls_token", False), ("unk_token", False), ("sep_token", False), ("max_tokens", False),
        ("secretary", False), ("tokens", False), ("api_keys_file", False),
    ],
)
def test_which_keys_hold_a_secret(name, secret):
    assert is_secret_key(name) is secret


def test_data_words_and_values_from_the_environment_pass():
    refuse_literal_secrets([
        "data.tokenizer=bpe", "+model.mask_token=4", "+model.pad_token=0", f"+logger.wandb.api_key={FROM_ENV}",
        f"+x.token='{FROM_ENV}','${{oc.env:OTHER}}'", "~logger.wandb.api_key", "+x.password=null", "-m", "--cfg", "job",
    ])


def test_redacted_hides_secret_keys_and_their_values_elsewhere():
    config = {"logger": {"wandb": {"api_key": "abc-123456", "project": "p"}}, "data": {"url": "https://u:abc-123456@host/x", "tokenizer": "bpe"}}
    assert redacted(config) == {"logger": {"wandb": {"api_key": REDACTED, "project": "p"}}, "data": {"url": f"https://u:{REDACTED}@host/x", "tokenizer": "bpe"}}


def _main(module: str, monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`python -m <module> <args>` in this process, from `tmp_path`: its exit status and stderr."""
    import importlib.util

    is_package = importlib.util.find_spec(module).submodule_search_locations is not None
    main = importlib.import_module(f"{module}.__main__" if is_package else module).main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def _refused_in_one_line(code: int, err: str, key: str, words: str = "${oc.env:NAME}") -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"dtrain: error: {key}:"), err
    assert words in err, err
    assert PLANTED not in err


@pytest.mark.parametrize(
    "args, key",
    [
        (["model=mlp", f"+logger.wandb.api_key={PLANTED}"], "logger.wandb.api_key"),
        (["-m", "model=mlp", f"+logger.wandb.api_key={PLANTED},sk-PLANTED456"], "logger.wandb.api_key"),
        (["model=mlp", f"+data.token={PLANTED}"], "data.token"),
        (["--cfg", "job", f"+callbacks.notify.smtp_password={PLANTED}"], "callbacks.notify.smtp_password"),
        ([f"hydra.job.env_set.WANDB_API_KEY={PLANTED}"], "hydra.job.env_set.WANDB_API_KEY"),
        ([f"+logger.wandb.settings={{api_key: {PLANTED}}}"], "logger.wandb.settings.api_key"),
        (["--cfg", "job", "--resolve", f"+logger.wandb.api_key={FROM_ENV}"], "--resolve"),  # would print it
    ],
)
def test_a_literal_secret_is_refused_before_hydra_writes_anything(monkeypatch, capsys, tmp_path, args, key):
    monkeypatch.setenv("DTRAIN_TEST_SECRET", ENV_SECRET)
    code, err = _main("dtrain", monkeypatch, capsys, tmp_path, *args)
    _refused_in_one_line(code, err, key, "--resolve" if key == "--resolve" else "${oc.env:NAME}")
    assert ENV_SECRET not in err
    assert list(tmp_path.iterdir()) == []  # no runs/, outputs/ or multirun/: no .hydra/overrides.yaml


def test_resume_refuses_a_literal_secret_and_leaves_the_run_alone(monkeypatch, capsys, tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    code, err = _main("dtrain", monkeypatch, capsys, tmp_path, f"resume={run}", f"+logger.wandb.api_key={PLANTED}")
    _refused_in_one_line(code, err, "logger.wandb.api_key")
    assert [p.name for p in tmp_path.iterdir()] == ["old_run"] and [p.name for p in run.iterdir()] == ["config.yaml"]


def test_compare_refuses_a_literal_secret_before_hydra_writes_anything(monkeypatch, capsys, tmp_path):
    code, err = _main("dtrain.compare", monkeypatch, capsys, tmp_path, f"+logger.wandb.api_key={PLANTED}")
    _refused_in_one_line(code, err, "logger.wandb.api_key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ([f"+logger.wandb.api_key={PLANTED}"], "logger.wandb.api_key", "${oc.env:NAME}"),
        ([f"sweep.overrides=['+model.hf_token={PLANTED}']"], "model.hf_token", "${oc.env:NAME}"),  # a sweep's own overrides
        (["space.logger.wandb.api_key=choice(a,b)"], "space.logger.wandb.api_key", "cannot be swept"),
    ],
)
def test_a_sweep_refuses_a_literal_or_swept_secret_before_ray_starts(monkeypatch, capsys, tmp_path, extra, key, words):
    code, err = _main("dtrain.tune", monkeypatch, capsys, tmp_path, *SWEEP, *extra)
    _refused_in_one_line(code, err, key, words)
    assert list(tmp_path.iterdir()) == []  # no sweep directory


def test_a_sweep_keeps_an_environment_secret_as_written(monkeypatch, tmp_path):
    """sweep.yaml, the trials' overrides, the space Ray samples each trial's params from (what it
    records) and the environment Ray is handed hold `${oc.env:...}`, never the value; the trial's
    own config still resolves it."""
    from omegaconf import OmegaConf

    from dtrain.tune.__main__ import _passed_env, prepare
    from dtrain.tune.trial import trial_config, trial_overrides

    monkeypatch.setenv("DTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DTRAIN_TEST_SECRET", ENV_SECRET)
    plan, _ = prepare([*SWEEP, "model=mlp", f"sweep.overrides=['+logger.wandb.api_key={FROM_ENV}']"])
    plan.save()
    saved = (plan.sweep_dir / "sweep.yaml").read_text()
    config = {"model.optimizer.lr": 1e-3}
    overrides = trial_overrides(plan, config, "t1")
    assert f"+logger.wandb.api_key={FROM_ENV}" in overrides and FROM_ENV in saved
    for record in (saved, repr(overrides), repr(plan.space), repr(_passed_env())):
        assert ENV_SECRET not in record
    assert "DTRAIN_RUNS_DIR" in _passed_env() and "DTRAIN_TEST_SECRET" not in _passed_env()
    assert OmegaConf.select(trial_config(plan, config, "t1"), "logger.wandb.api_key") == ENV_SECRET


def test_the_slurm_job_script_holds_no_secret(monkeypatch, tmp_path):
    from dtrain.config.compose import compose
    from dtrain.launch.slurm import render, settle

    monkeypatch.setenv("DTRAIN_TEST_SECRET", ENV_SECRET)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    overrides = ["launcher=slurm", "logger=[csv,wandb]", f"+logger.wandb.api_key={FROM_ENV}"]
    cfg = compose(overrides, run_dir=tmp_path)
    settle(cfg)
    script = render(cfg, tmp_path, overrides)
    assert FROM_ENV in script and ENV_SECRET not in script and WANDB_KEY not in script
    cfg = compose([*overrides, "launcher.setup=['export WANDB_API_KEY=${oc.env:WANDB_API_KEY}']"], run_dir=tmp_path)
    settle(cfg)
    with pytest.raises(ConfigError, match="launcher.setup: would write a secret"):
        render(cfg, tmp_path, overrides)


def test_secrets_from_the_environment_reach_no_file_logger_or_console(tmp_path):
    """A real run with W&B (offline), CSV and TensorBoard, its API key from the environment."""
    done = dtrain_cli(
        "model=mlp", "budget=smoke", "logger=[csv,wandb,tensorboard]", f"+logger.wandb.api_key={FROM_ENV}",
        "trainer.enable_progress_bar=false", cwd=tmp_path, env={"DTRAIN_TEST_SECRET": ENV_SECRET, "WANDB_API_KEY": WANDB_KEY},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = {p.parent for p in (tmp_path / "runs").rglob("env.json")}
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    wanted = {"config.yaml", "overrides.yaml", "hydra.yaml", "env.json", "hparams.yaml", "run.log", "metrics.csv"}
    assert wanted <= {p.name for p in files} and any(p.suffix == ".wandb" for p in files)
    # The resolved config reached every logger, redacted: the W&B run's config and TensorBoard's hparams.
    assert all(f"api_key: {REDACTED}" in p.read_text() for p in files if p.name == "hparams.yaml" and "tensorboard" in p.parts)
    assert all(REDACTED.encode() in p.read_bytes() for p in files if p.suffix == ".wandb")
    for secret in (ENV_SECRET, WANDB_KEY):
        assert secret not in done.stdout + done.stderr
        assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []


def test_the_api_key_from_the_environment_is_what_wandb_logs_in_with(tmp_path, monkeypatch):
    """Online, `logger.wandb.api_key='${oc.env:NAME}'` reaches wandb.init as W&B's own api_key
    setting (not `wandb login`, which would save it in ~/.netrc); config.yaml keeps `${oc.env:...}`."""
    import wandb
    from hydra.utils import instantiate

    from dtrain.config.compose import compose
    from dtrain.run_dir import fix_run_dir, save_config

    monkeypatch.setenv("DTRAIN_TEST_SECRET", ENV_SECRET)
    started = {}
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.update(kwargs) or object())  # no network here
    monkeypatch.setattr(wandb, "login", lambda *a, **k: pytest.fail("wandb.login saves the key"))
    cfg = compose(["logger.wandb.mode=online", f"+logger.wandb.api_key={FROM_ENV}"], run_dir=tmp_path / "run")
    save_config(cfg, fix_run_dir(cfg))
    instantiate(cfg.logger.wandb).experiment
    assert started["mode"] == "online" and started["settings"]["api_key"] == ENV_SECRET
    assert ENV_SECRET not in (tmp_path / "run" / "config.yaml").read_text()
