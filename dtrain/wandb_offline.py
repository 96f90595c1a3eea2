"""Reads an offline W&B run file (`run-<id>.wandb`) back (history, summary, config): wandb
ships no public reader for it.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each a 7-byte
header (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) and a chunk of a
serialized `wandb_internal_pb2.Record`.
"""

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    offset, pending = _HEADER, b""
    while offset + _HEADER <= len(data):
        left_in_block = _BLOCK - offset % _BLOCK
        if left_in_block < _HEADER:  # block tail too short for a header: padding
            offset += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:  # zeros: the writer left the rest of this block unused
            offset = (offset - _HEADER - length) // _BLOCK * _BLOCK + _BLOCK


def records(path: Path, kind: str) -> Iterator:
    """The file's records of one kind ("history", "summary", "config", ...), in order."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:  # the last record of a file whose writer was killed
            return
        if record.WhichOneof("record_type") == kind:
            yield getattr(record, kind)


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_history(path: Path) -> list[dict]:
    """Every `history` row the run logged, as {key: value}."""
    return [_items(history.item) for history in records(path, "history")]


def _applied(path: Path, kind: str) -> dict:
    """A `summary` or `config` record stream with every update and removal applied in order."""
    values = {}
    for record in records(path, kind):
        values.update(_items(record.update))
        for item in record.remove:
            values.pop(item.key or "/".join(item.nested_key), None)
    return values


def read_summary(path: Path) -> dict:
    """The run summary as the file leaves it."""
    return _applied(path, "summary")


def read_config(path: Path) -> dict:
    """The run config (dtrain's whole config, its `env` record, W&B's own `_wandb` key)."""
    return _applied(path, "config")


def read_run(path: Path) -> dict:
    """The run's own record: id, group, project, name, tags (the last one written)."""
    run = {}
    for record in records(path, "run"):
        run = {"id": record.run_id, "group": record.run_group, "project": record.project, "name": record.display_name, "tags": list(record.tags)}
    return run


def wait_closed(path: Path, timeout: float = 60.0) -> bool:
    """Wait until the file holds the run's exit record, its last: `wandb.finish()` can return
    before W&B's service has written the file out. False if it is still open after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not any(True for _ in records(path, "exit")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def recorded_keys(wandb_dir: Path, run_id: str, leave_out: Path | None = None) -> dict[int, set[str]]:
    """For each `trainer/global_step`, the keys the earlier segments of W&B run `run_id` recorded
    at it: the run files of its earlier processes under `wandb_dir` (offline or online), all
    but the folder `leave_out` (the segment being written)."""
    steps: dict[int, set[str]] = {}
    for path in sorted(Path(wandb_dir).glob(f"*run-*-{run_id}/run-{run_id}.wandb")):
        if leave_out is not None and path.parent == Path(leave_out):
            continue
        for row in read_history(path):
            if row.get("trainer/global_step") is not None:
                steps.setdefault(int(row["trainer/global_step"]), set()).update(key for key in row if not key.startswith("_"))
    return steps


def run_files(run_dir: Path) -> list[Path]:
    """The offline W&B run files under a dtrain run directory, oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
