"""Opening checkpoints without running their code, and finding the one a resume starts from:
the newest one that loads.

A checkpoint is a pickle, and unpickling can call any function the file names. Every file is
opened with torch's weights-only unpickler (tensors, plain containers and numbers only); so are
the pickles inside sharded checkpoint folders (DeepSpeed's `*.pt`, torch-DCP's `.metadata` and
the non-tensor items of its `.distcp` files), before the loaders of DeepSpeed and torch-DCP,
which unpickle them fully, ever see the folder; and within `trusting` those loaders' own loads are
weights-only too, so a file swapped after its check is refused all the same.
`runtime.trust_checkpoints=true`, given on the command line, lifts this (`trusting`).
"""

import io
import logging
import pickle
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

log = logging.getLogger(__name__)

TRUST_KEY = "runtime.trust_checkpoints"
# Written last into a sharded checkpoint folder, once every rank's shard is on disk:
# {"global_step": int, "epoch": int}. A folder without it is incomplete (a save cut short).
COMPLETE_MARKER = "dtrain_complete.json"
_trusted: ContextVar[bool] = ContextVar("trust_checkpoints", default=False)


class UnsafeCheckpoint(Exception):
    """A checkpoint that would run code when loaded: its pickle names a global that a
    weights-only load refuses."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"{path} would run code when loaded ({what})")
        self.path, self.what = Path(path), what


class NotACheckpoint(RuntimeError):
    """A file in neither of torch.save's formats: never unpickled."""


@contextmanager
def trusting(trust: bool) -> Iterator[None]:
    """Within: checkpoints are loaded fully (`runtime.trust_checkpoints=true`), or else weights-only,
    the loads of DeepSpeed's and torch-DCP's own loaders included (_sharded_loaders_weights_only)."""
    token = _trusted.set(bool(trust))
    try:
        with _sharded_loaders_weights_only():
            yield
    finally:
        _trusted.reset(token)


def trusted() -> bool:
    return _trusted.get()


# DeepSpeed's checkpoint engine and torch-DCP unpickle their files fully (torch.load with
# weights_only=False; pickle.load of DCP's `.metadata`). check_safe checks those files first, but
# one replaced between that check and their load would still run its code: so, within `trusting`,
# the loads these two make are weights-only themselves (DeepSpeed's data classes allowed, the
# `.metadata` read by check_safe's unpickler), and what they read is what is checked.
_DCP = "torch.distributed.checkpoint."
_SHARDED_LOADERS = ("deepspeed.", _DCP)


@contextmanager
def _sharded_loaders_weights_only() -> Iterator[None]:
    import torch

    if getattr(torch.load, "_dtrain_checked", False):  # an enclosing `trusting` did it
        yield
        return
    originals = torch.load, pickle.load
    torch.load = _checked(torch.load, _torch_load_weights_only, _SHARDED_LOADERS)
    pickle.load = _checked(pickle.load, _metadata_load, _DCP)  # DCP's one pickle.load: its `.metadata`
    try:
        yield
    finally:
        torch.load, pickle.load = originals


def _checked(load, checked_load, callers: str | tuple[str, ...]):
    """`load`, but `checked_load` when code in the modules `callers` calls it and checkpoints are not trusted."""

    def dispatch(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if trusted() or not caller.startswith(callers):
            return load(*args, **kwargs)
        return checked_load(load, *args, **kwargs)

    dispatch._dtrain_checked = True
    return dispatch


def _torch_load_weights_only(torch_load, f, *args, **kwargs):
    import torch

    kwargs.update(weights_only=True)
    allowed = _deepspeed_classes() if "deepspeed" in sys.modules else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch_load(f, *args, **kwargs)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise
        raise UnsafeCheckpoint(_name(f, "a torch-DCP item"), _refused_global(str(error))) from None


def _metadata_load(_, file):
    try:
        return _MetadataUnpickler(file).load()
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(_name(file, "a torch-DCP .metadata"), _refused_global(str(error))) from None


def _name(f, otherwise: str) -> Path:
    """The path of what a loader opened: a path, a file's name, or (an item read into memory) `otherwise`."""
    return Path(f if isinstance(f, (str, Path)) else getattr(f, "name", otherwise))


def load_checkpoint(path: Path | str, mmap: bool = False) -> dict:
    """torch.load of one checkpoint file onto the CPU, weights-only unless trusted. Raises
    UnsafeCheckpoint for a file that would run code, NotACheckpoint for one in neither of
    torch.save's formats, torch's own error for one cut short."""
    import torch

    kind = _torch_format(path)
    if kind is None:
        raise NotACheckpoint(f"{path} is not a file torch.save wrote (cut short, or something else)")
    mmap = mmap and kind == "zip"  # torch maps only its zip format; an old-format file is read (and checked) whole
    if trusted():
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise
        raise UnsafeCheckpoint(Path(path), _refused_global(str(error))) from None


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name}")


def _torch_format(path: Path | str) -> str | None:
    """"zip" (torch.save's format; a file cut short still starts like one, and torch's reader
    then fails), "legacy" (the old format: a pickled magic number first), or None."""
    import torch

    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            return "zip"
        f.seek(0)
        try:
            first = _NoGlobals(f).load()
        except Exception:
            return None
    return "legacy" if first == torch.serialization.MAGIC_NUMBER else None


def _refused_global(message: str) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    return f"it names {found.group(1)}" if found else message.rsplit("WeightsUnpickler error: ", 1)[-1].split("\n", 1)[0].strip()


def check_safe(path: Path | str) -> None:
    """Raise UnsafeCheckpoint if loading the checkpoint `path` (a file, or a sharded folder)
    could run code; nothing when trusted. Files that are not pickles are not opened."""
    path = Path(path)
    if trusted():
        return
    if not path.is_dir():
        load_checkpoint(path, mmap=True)
        return
    allowed = _deepspeed_classes() if (path / "latest").is_file() else []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix in (".pt", ".pth", ".ckpt", ".bin"):  # DeepSpeed's states, Lightning's meta.pt
            import torch

            with torch.serialization.safe_globals(allowed):
                load_checkpoint(file, mmap=True)
        elif file.name.endswith(".metadata"):  # torch-DCP: `.metadata` (or `__<rank>.metadata`)
            _check_dcp_folder(file)


def _deepspeed_classes() -> list:
    """The plain data classes DeepSpeed pickles into its optimizer states (a loss scaler, the
    ZeRO stage, fragment addresses), which a weights-only load may build."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # then nothing can load the folder anyway; its globals stay refused
        return []
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


# What a torch-DCP `.metadata` pickle holds: the checkpoint's own dataclasses, torch's sizes,
# dtypes, layouts and memory formats, and plain containers. Nothing here runs code when called.
_DCP_MODULES = ("torch.distributed.checkpoint.metadata",)  # dataclasses and enums only
_TORCH_TYPES = ("Size", "dtype", "layout", "memory_format")
# torch.serialization._get_layout looks a layout up by its name (how layouts pickle).
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),  # the checkpoint id: building a path reads no file
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),  # where an item lies: file, offset, length
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import torch

        if module in _DCP_MODULES:
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        elif module == "torch" and (name in _TORCH_TYPES or isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))):
            return super().find_class(module, name)
        elif (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def _check_dcp_folder(metadata_file: Path) -> None:
    """The DCP metadata, read with the unpickler above, then every non-tensor item it lists
    (torch-DCP loads those with weights_only=False) with a weights-only load."""
    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    try:
        with open(metadata_file, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(metadata_file, _refused_global(str(error))) from None
    folder = metadata_file.parent
    for index, info in (getattr(metadata, "storage_data", None) or {}).items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue  # a tensor: torch-DCP loads those weights-only itself
        item = folder / info.relative_path
        if info.transform_descriptors:
            raise UnsafeCheckpoint(item, f"{index.fqn} is stored transformed ({', '.join(info.transform_descriptors)}) and cannot be checked")
        with open(item, "rb") as f:
            f.seek(info.offset)
            data = io.BytesIO(f.read(info.length))
        try:
            torch.load(data, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "Weights only load failed" not in str(error):
                raise
            raise UnsafeCheckpoint(item, f"{index.fqn}: {_refused_global(str(error))}") from None


def _progress(path: Path) -> tuple[int, float] | None:
    """(global step, mtime) of a loadable Lightning checkpoint, None for a broken or incomplete
    one. Raises UnsafeCheckpoint for one that would run code."""
    try:
        if path.is_dir():  # sharded (DeepSpeed, torch-DCP) checkpoints are folders
            step = folder_step(path)
            if step is None:
                return None
            check_safe(path)
            return (step, path.stat().st_mtime)
        checkpoint = load_checkpoint(path, mmap=True)
        if "state_dict" not in checkpoint or "loops" not in checkpoint:
            return None
        return (int(checkpoint.get("global_step", -1)), path.stat().st_mtime)
    except UnsafeCheckpoint:
        raise
    except Exception:  # a file cut short by a kill, or not a checkpoint at all
        return None


def folder_step(folder: Path) -> int | None:
    """The global step a sharded checkpoint folder was saved at; None if it is incomplete.

    COMPLETE_MARKER says so when present (dtrain writes it last). A folder saved without it (by
    an older dtrain, or Lightning itself) is read: DeepSpeed's client state in rank 0's model
    states (every rank's optimizer shard must be there), or torch-DCP's `meta.pt` (written by
    rank 0 after the shards and their `.metadata`). Weights-only loads, memory-mapped.
    """
    import json

    marker = folder / COMPLETE_MARKER
    if marker.is_file():
        return int(json.loads(marker.read_text())["global_step"])
    if (folder / "latest").is_file():
        return _deepspeed_step(folder)
    if (folder / ".metadata").is_file() and (folder / "meta.pt").is_file():
        return int(load_checkpoint(folder / "meta.pt", mmap=True)["global_step"])
    return None


def _deepspeed_step(folder: Path) -> int | None:
    import torch

    tag = folder / (folder / "latest").read_text().strip()
    states = sorted(tag.glob("*mp_rank_00_model_states.pt"))  # ZeRO-3: one per rank, rank 0's first
    if not states:
        return None
    with torch.serialization.safe_globals(_deepspeed_classes()):
        client = load_checkpoint(states[0], mmap=True)
    world = int(client.get("dp_world_size", 1))
    if client.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0) and len(list(tag.glob("*optim_states.pt"))) < world:
        return None  # a rank's optimizer shard is missing: the save was cut short
    return int(client["global_step"])


_warned: set[Path] = set()


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    return [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint furthest into training (ties: the newest file), skipping broken ones and,
    with one warning each, ones that would run code."""
    scored = []
    for path in checkpoint_candidates(run_dir):
        try:
            score = _progress(path)
        except UnsafeCheckpoint as unsafe:
            if path not in _warned:  # once per process: a run may look for its checkpoint twice
                _warned.add(path)
                log.warning(f"skipped checkpoint {unsafe}; {TRUST_KEY}=true on the command line loads it")
            continue
        if score is not None:
            scored.append((score, path))
    return max(scored)[1] if scored else None


def safe_or_none(path: Path | str) -> Path | str | None:
    """`path` if it may be loaded (see check_safe), else None after one warning naming it."""
    try:
        check_safe(path)
    except UnsafeCheckpoint as unsafe:
        log.warning(f"not loading checkpoint {unsafe}; testing the weights in memory instead ({TRUST_KEY}=true loads it)")
        return None
    except Exception as error:  # broken: it could not be checked, so it is not loaded either
        log.warning(f"not loading checkpoint {path}, which does not load ({type(error).__name__}); testing the weights in memory instead")
        return None
    return path
