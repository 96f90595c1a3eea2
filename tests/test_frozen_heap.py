"""Python's collector leaves the objects a run starts with alone while it trains (gc.freeze), and
gets them back when training ends, however it ends."""

import gc
import json

import pytest

from dtrain.config.compose import compose
from dtrain.train import run


def probed_config(tmp_path, *extra):
    return compose([
        "model=mlp", "trainer.max_steps=3", "logger=[csv]", "test=false", "trainer.enable_progress_bar=false",
        "+callbacks.probe._target_=tests.probes.FreezeCountProbe", *extra,
    ], run_dir=tmp_path / "run")


def test_frozen_while_training_and_thawed_after(tmp_path):
    assert gc.get_freeze_count() == 0
    run(probed_config(tmp_path))
    counts = json.loads((tmp_path / "run" / "freeze_counts.json").read_text())
    assert len(counts) == 3 and min(counts) > 10_000  # torch, Lightning and the run itself
    assert gc.get_freeze_count() == 0


def test_thawed_when_training_fails(tmp_path):
    with pytest.raises(BaseException):
        run(probed_config(tmp_path, "+callbacks.oom._target_=tests.probes.HostOutOfMemory", "+callbacks.oom.at=1"))
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_itself_is_left_as_it_is(tmp_path):
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        run(probed_config(tmp_path))
        counts = json.loads((tmp_path / "run" / "freeze_counts.json").read_text())
        # Nothing more is frozen, nothing is thawed (frozen objects freed by their last reference leave the count).
        assert len(counts) == 3 and before - 1000 < min(counts) and max(counts) <= before
        assert before - 1000 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()
