"""Bad data and resources (issue 11, item 6): each ends in one line naming the file, the place or
the fix, exit status 2, never a hang, a traceback or a silently wrong dataset. The data files are
written by the tests; the faults (a corrupt image, a dying loader worker, a failed allocation) are
real."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dtrain.config.errors import ConfigError
from tests.conftest import dtrain_cli
from tests.test_data_images import write_images

FAST = ("data.batch_size=16", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0", "test=false", "~callbacks.records")


def write_csv(path, rows, header="a,b,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def table(tmp_path, n=100):
    rng = np.random.default_rng(0)
    return [f"{x:.3f},{y:.3f},{int(x > 0) + int(y > 0)}" for x, y in rng.normal(size=(n, 2))]  # 3 classes


@pytest.mark.parametrize(
    "rows, args, key, words",
    [
        (lambda rows: rows[:2] + ["0.5,abc,1"] + rows[2:], (), "data.path", "line 4, column 'b': 'abc' is not a number"),
        (lambda rows: rows[:5] + ["0.5,,1"] + rows[5:], (), "data.path", "line 7, column 'b': '' is not a number"),
        (lambda rows: rows, ("data.target=class",), "data.target", "column 'class' is not in"),
        (lambda rows: rows[:3] + ["0.1,0.2,-1"] + rows[3:], (), "data.target", "data row 4 has -1"),
    ],
)
def test_a_table_that_is_not_numbers_or_lacks_its_target(train, tmp_path, rows, args, key, words):
    path = write_csv(tmp_path / "table.csv", rows(table(tmp_path)))
    with pytest.raises(ConfigError, match=f"^{key}: .*{words}") as error:
        train("model=mlp", f"data.path={path}", *args, *FAST)
    assert "\n" not in str(error.value)


def test_a_label_beyond_the_nets_classes(train, tmp_path):
    path = write_csv(tmp_path / "table.csv", table(tmp_path))  # labels 0, 1 and 2
    with pytest.raises(ConfigError, match=r"^data: a label is outside the net's classes \(Target 2 is out of bounds"):
        train("model=mlp", f"data.path={path}", "model.num_classes=2", "model.net.out_features=2", *FAST)


def test_a_training_split_smaller_than_one_batch(train, tmp_path):
    path = write_csv(tmp_path / "table.csv", table(tmp_path))
    with pytest.raises(ConfigError, match="^data.batch_size: the training split holds 65 samples .* fewer than one batch of 128"):
        train("model=mlp", f"data.path={path}", *FAST, "data.batch_size=128")


@pytest.mark.parametrize("content, words", [(b"", "holds 0 bytes"), (bytes(range(256)) * 200, "holds binary data, not text")])
def test_an_empty_or_binary_corpus(train, tmp_path, content, words):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^data.path: {path} {words}"):
        train("model=transformer", f"data.path={path}", *FAST)


def test_a_class_folder_with_no_files(train, tmp_path):
    folder = write_images(tmp_path / "imgs", per_class=4)
    (folder / "bird").mkdir()
    with pytest.raises(Exception) as error:  # raised by the datamodule, inside Hydra's instantiate
        train("model=cnn", "data=images", f"data.path={folder}", *FAST)
    mistake = error.value if isinstance(error.value, ConfigError) else error.value.__cause__
    assert isinstance(mistake, ConfigError) and "\n" not in str(mistake)
    assert str(mistake).startswith("data.path: ") and "Found no valid file for the classes bird" in str(mistake)


def test_the_host_running_out_of_memory_names_the_planner(train, fault_record):
    with pytest.raises(ConfigError, match=r"^memory: the host ran out of memory .*python -m dtrain.plan") as error:
        train("model=mlp", "+callbacks.oom._target_=tests.probes.HostOutOfMemory", *FAST)
    assert "\n" not in str(error.value)
    fault_record("host_oom", "cpu", survived=None, nothing_lost=None, message=True)


def one_line_exit_2(done, *words):
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines[-1].startswith("dtrain: error: "), done.stderr[-2000:]
    assert sum(line.startswith("dtrain: error: ") for line in lines) == 1
    for word in words:
        assert word in lines[-1], lines[-1]


def test_a_corrupt_image_read_by_a_loader_worker_is_named(tmp_path):
    folder = write_images(tmp_path / "imgs", per_class=6)
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # a PNG signature, then nothing decodable
    Image.open(folder / "dog" / "1.png")  # the others are real images
    done = dtrain_cli("model=cnn", "data=images", f"data.path={folder}", "data.image_size=8", "data.batch_size=4", "data.num_workers=2",
                      "data.val_fraction=0.2", "data.test_fraction=0.2", "logger=[csv]", "trainer.max_epochs=2", cwd=tmp_path, timeout=300)
    one_line_exit_2(done, "data.path: ", str(bad), "cannot be read as an image", "remove or replace")


def test_a_loader_worker_that_dies_ends_the_run_in_one_line(tmp_path, fault_record):
    done = dtrain_cli("data._target_=tests.probes.dying_worker_digits", "data.num_workers=2", "logger=[csv]", *FAST, cwd=tmp_path, timeout=300)
    one_line_exit_2(done, "data.num_workers: a data loader worker process died", "data.num_workers=0")
    fault_record("loader_worker_dies", "cpu", survived=None, nothing_lost=None, message=True)


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MiB filesystem (tmpfs), mounted for the test and unmounted after it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_mid_run_stops_it_cleanly_and_resume_finishes(small_disk, tmp_path, fault_record):
    run = small_disk / "run"
    done = dtrain_cli("model=mlp", "logger=[csv]", "trainer.max_epochs=4", "+callbacks.fill._target_=tests.probes.FillDisk",
                      "+callbacks.fill.epoch=2", f"hydra.run.dir={run}", cwd=tmp_path, timeout=300)
    one_line_exit_2(done, "paths.runs_dir: the disk of", "is full", "last good checkpoint is", f"resume={run}")
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept and not [name for name in kept if not name.endswith(".ckpt")], kept  # no staging files left
    from dtrain.checkpoints import load_checkpoint, newest_valid_checkpoint

    previous = newest_valid_checkpoint(run)
    assert previous is not None and load_checkpoint(previous)["epoch"] <= 1  # an earlier epoch's, intact
    assert str(previous) in done.stderr
    (small_disk / "filler").unlink()  # space freed
    resumed = dtrain_cli(f"resume={run}", cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4 * 5  # all 4 epochs of 5 steps
    fault_record("disk_full", "cpu", survived=True, nothing_lost=True, message=True)
