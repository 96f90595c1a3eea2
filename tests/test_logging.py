"""Metrics reach the CSV file and the offline W&B run: training loss, validation metrics, throughput."""

import csv

import pytest
from omegaconf import OmegaConf

from dtrain.wandb_offline import read_history, run_files


def test_metrics_go_to_csv_and_offline_wandb(train, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # must never end up in a file
    metrics, run_dir = train(
        "model=cnn", "logger=[csv,wandb]", "trainer.max_epochs=2", "trainer.log_every_n_steps=5"
    )
    assert metrics["test/acc"] > 0.5

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    column = lambda key: [float(row[key]) for row in rows if row.get(key)]
    assert any(value > 0 for value in column("train/samples_per_sec"))
    assert column("test/acc") == pytest.approx([metrics["test/acc"]])  # the number the run returned

    (wandb_file,) = run_files(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert wandb_file.name == f"run-{cfg.run_id}.wandb"
    history = read_history(wandb_file)
    logged = set().union(*history)
    assert {"train/loss", "val/loss", "val/acc", "train/samples_per_sec", "test/acc"} <= logged
    val_acc = [row["val/acc"] for row in history if "val/acc" in row]
    assert len(val_acc) == 2 and val_acc[-1] > 0.5
    test_acc = next(row["test/acc"] for row in history if "test/acc" in row)
    assert abs(test_acc - metrics["test/acc"]) < 1e-6
    # both files hold the same values, logged at the same steps: one per epoch, and the training
    # loss every 5 steps
    assert column("val/acc") == pytest.approx(val_acc)
    train_loss = [(row["trainer/global_step"], row["train/loss"]) for row in history if "train/loss" in row]
    csv_loss = [(int(row["step"]), float(row["train/loss"])) for row in rows if row.get("train/loss")]
    assert [step for step, _ in csv_loss] == [step for step, _ in train_loss]
    assert [value for _, value in csv_loss] == pytest.approx([value for _, value in train_loss])
    assert len(train_loss) >= 2 and all((step + 1) % 5 == 0 for step, _ in train_loss)

    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".csv"):
            assert "x" * 40 not in path.read_text(errors="ignore"), f"API key written to {path}"


def test_wandb_online_mode_reaches_wandb_init_without_the_key(tmp_path, monkeypatch):
    """`logger.wandb.mode=online`: the W&B run the logger starts is an online one, in project
    dtrain with the run's id, writing under the run directory; the API key stays in the
    environment, out of wandb.init's arguments and the saved config."""
    import wandb
    from hydra.utils import instantiate

    from dtrain.config.compose import compose
    from dtrain.run_dir import fix_run_dir, save_config

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    started = {}
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.update(kwargs) or object())  # no network here
    cfg = compose(["logger.wandb.mode=online"], run_dir=tmp_path / "run")
    run_dir = fix_run_dir(cfg)
    save_config(cfg, run_dir)
    instantiate(cfg.logger.wandb).experiment

    assert started["mode"] == "online" and started["project"] == "dtrain" and started["id"] == cfg.run_id
    assert started["dir"] == str(run_dir)
    assert "k" * 40 not in repr(started) and "k" * 40 not in (run_dir / "config.yaml").read_text()
