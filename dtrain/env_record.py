"""The reproducibility record of a run (env.json and the W&B run config): code, packages,
versions, devices and process layout. Nothing secret: credentials in URLs and the values of
secret-looking environment variables are removed wherever they would appear."""

import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

DIFF_LIMIT = 200_000  # characters of `git diff`; a bigger diff is cut and flagged
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def strip_credentials(text: str) -> str:
    """`https://user:token@host/x` -> `https://host/x`."""
    return _CREDENTIALS.sub(r"\g<scheme>", text)


def scrub(value, secrets: list[str] | None = None):
    """`value` (nested dicts, lists, strings) without URL credentials or any of `secrets` (by
    default the values of environment variables named like a key, token or password)."""
    if secrets is None:
        secrets = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8]
    if isinstance(value, dict):
        return {key: scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets) for item in value]
    if isinstance(value, str):
        value = strip_credentials(value)
        for secret in secrets:
            value = value.replace(secret, "<redacted>")
    return value


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    if result.returncode:
        raise subprocess.SubprocessError(result.stderr.strip())
    return result.stdout


def git_state(where: Path | None = None) -> dict:
    """Commit, remote and the diff of tracked files (never untracked ones) of the git work tree
    the run started in, or else of the one holding dtrain's source; {} outside git."""
    import dtrain

    for cwd in filter(None, [where, Path.cwd(), Path(dtrain.__file__).resolve().parent]):
        try:
            root = _git(cwd, "rev-parse", "--show-toplevel").strip()
        except (OSError, subprocess.SubprocessError):
            continue
        try:
            diff = _git(cwd, "diff", "HEAD", "--no-color", "--no-ext-diff")
            remote = _git(cwd, "config", "--get", "remote.origin.url").strip() if _has_remote(cwd) else None
            return {
                "root": root,
                "commit": _git(cwd, "rev-parse", "HEAD").strip(),
                "branch": _git(cwd, "rev-parse", "--abbrev-ref", "HEAD").strip(),
                "remote": remote,
                "dirty": bool(diff),
                "diff": diff[:DIFF_LIMIT],
                "diff_truncated": len(diff) > DIFF_LIMIT,
            }
        except (OSError, subprocess.SubprocessError):
            return {"root": root}  # e.g. a repository without commits
    return {}


def _has_remote(cwd: Path) -> bool:
    return "origin" in _git(cwd, "remote").split()


def installed_packages() -> dict:
    """{name: version} of every installed distribution, read from its metadata (no pip), and the
    URL of any installed from a URL or a VCS checkout (PEP 610 direct_url.json)."""
    import json
    from importlib import metadata

    packages, urls = {}, {}
    for dist in metadata.distributions():
        fields = dist.metadata  # parsed on each access (`dist.version` too): once per distribution
        name = fields["Name"]
        if not name:
            continue
        packages[name] = fields["Version"]
        direct = dist.read_text("direct_url.json")
        if direct:
            try:
                url = json.loads(direct).get("url")
            except ValueError:
                url = None
            if url and not url.startswith("file:"):
                urls[name] = url
    return {"packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())), "package_urls": urls}


def versions() -> dict:
    import lightning
    import torch

    import dtrain

    found = {"dtrain": dtrain.__version__, "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__, "cuda": torch.version.cuda, "cudnn": None, "nccl": None}
    if torch.cuda.is_available():
        found["cudnn"] = torch.backends.cudnn.version()
        try:
            found["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except (AttributeError, RuntimeError, TypeError):
            pass
    return found


def devices() -> dict:
    import psutil
    import torch

    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 2), "capability": f"{props.major}.{props.minor}"})
    cpu_name = platform.processor()
    try:
        cpu_name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"gpus": gpus, "cpu": {"name": cpu_name, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 2)}}


def layout(trainer) -> dict:
    """Where the processes sit: world, nodes, and the data/tensor/pipeline parallel sizes."""
    from dtrain.parallel.dims import dims_of

    strategy, dims = trainer.strategy, dims_of(trainer)
    return {
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices_per_node": trainer.num_devices,
        "data_parallel_size": dims.data_parallel, "tensor_parallel_size": dims.tensor, "pipeline_parallel_size": dims.pipeline, "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(strategy).__name__, "precision": trainer.precision,
    }


def env_record(trainer) -> dict:
    """Everything above, scrubbed of secrets."""
    found_devices, found_versions = devices(), versions()
    record = {
        "argv": sys.argv, "host": socket.gethostname(), "python": platform.python_version(), "platform": platform.platform(),
        "versions": found_versions, "cuda": found_versions["cuda"], "gpus": [gpu["name"] for gpu in found_devices["gpus"]],
        "cpu_count": os.cpu_count(), "devices": found_devices, **layout(trainer), "git": git_state(), **installed_packages(),
    }
    return scrub(record)
