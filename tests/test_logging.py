"""Metrics reach the CSV file and the offline W&B run: training loss, validation metrics, throughput."""

import csv

from omegaconf import OmegaConf

from dtrain.wandb_offline import read_history, run_files


def test_metrics_go_to_csv_and_offline_wandb(train, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # must never end up in a file
    metrics, run_dir = train(
        "model=cnn", "logger=[csv,wandb]", "trainer.max_epochs=2", "trainer.log_every_n_steps=5"
    )
    assert metrics["test/acc"] > 0.5

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert any(row["train/loss"] for row in rows)
    assert any(row["val/acc"] for row in rows)
    assert any(row["train/samples_per_sec"] and float(row["train/samples_per_sec"]) > 0 for row in rows)

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

    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".csv"):
            assert "x" * 40 not in path.read_text(errors="ignore"), f"API key written to {path}"


def test_wandb_online_mode_is_a_config_choice():
    from dtrain.config.compose import compose

    cfg = compose(["logger.wandb.mode=online"])
    assert cfg.logger.wandb.mode == "online"
    assert "key" not in OmegaConf.to_yaml(cfg.logger.wandb).lower().replace("wandb", "")
