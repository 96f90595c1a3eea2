"""The filesystem steps of an atomic checkpoint save: staging names, fsync, the rename that makes
a staged file or folder the checkpoint, and removing what an interrupted save left behind.

Every name a save works under is outside the resume picker's glob (`checkpoints/*.ckpt`) until
the checkpoint it holds is complete, except the `.replaced.ckpt` name a folder's predecessor
takes for the moment between two renames, when it is the newest complete checkpoint there is.
"""

import json
import os
import re
import shutil
from pathlib import Path

from dtrain.checkpoints import COMPLETE_MARKER

# `<name>.tmp-<pid>`: a save being written; `<name>.old-<pid>`: a checkpoint being deleted.
_LEFTOVER = re.compile(r"\.(tmp|old)-\d+$")


def staging_path(final: Path) -> Path:
    return final.with_name(f"{final.name}.tmp-{os.getpid()}")


def retired_path(final: Path) -> Path:
    """Where a folder's predecessor waits while the new folder takes its name (still `*.ckpt`)."""
    return final.with_name(f"{final.stem}.replaced{final.suffix}")


def _trash_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.old-{os.getpid()}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the names in `path` (a rename, a new file) durable, not only the files' contents."""
    fsync_file(path)


def fsync_tree(path: Path) -> None:
    """Every file in a checkpoint folder (or the file itself), then its folders."""
    if not path.is_dir():
        fsync_file(path)
        return
    for folder, _, files in os.walk(path):
        for name in files:
            fsync_file(Path(folder, name))
        fsync_dir(Path(folder))


def write_marker(folder: Path, global_step: int, epoch: int) -> None:
    """COMPLETE_MARKER, written last into a staged sharded folder, itself atomically."""
    marker = folder / COMPLETE_MARKER
    partial = staging_path(marker)
    with open(partial, "w") as file:
        json.dump({"global_step": int(global_step), "epoch": int(epoch)}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, marker)
    fsync_dir(folder)


def install(staging: Path, final: Path) -> None:
    """Give the complete checkpoint at `staging` the name `final`. A file replaces a file in one
    rename. A folder cannot be renamed over another, so the old one steps aside to its retired
    name first: a kill between any two steps leaves a complete checkpoint under a `*.ckpt` name."""
    if not staging.is_dir() and not final.is_dir():
        os.replace(staging, final)
        fsync_dir(final.parent)
        return
    retired = retired_path(final)
    if final.exists() or final.is_symlink():
        if retired.exists():  # left by a kill after `final` was installed: `final` is newer
            remove(retired)
        retire(final, retired)
    rename_into_place(staging, final)
    if retired.exists():
        remove(retired)


def retire(final: Path, retired: Path) -> None:
    os.rename(final, retired)
    fsync_dir(final.parent)


def rename_into_place(staging: Path, final: Path) -> None:
    os.rename(staging, final)
    fsync_dir(final.parent)


def remove(path: Path) -> Path | None:
    """Delete a checkpoint file or folder: it first leaves its `*.ckpt` name in one rename, so a
    kill midway never leaves a half-deleted folder that still looks like a checkpoint. Returns
    the name it was deleted under (or None if there was nothing)."""
    if not (path.exists() or path.is_symlink()):
        return None
    trash = _trash_path(path)
    os.rename(path, trash)
    _delete(trash)
    return trash


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete what saves or removals cut short by a kill left in `folder` (staging and trash
    names only; never a complete checkpoint)."""
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if _LEFTOVER.search(path.name)]
    for path in found:
        _delete(path)
    return found


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
