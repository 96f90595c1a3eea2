"""A real two-node Ray cluster on this machine for tests: a head and a worker, two separate
`ray start --block` processes on 127.0.0.1, stopped by pid (never `ray stop`)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import child_env

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(**extra: str) -> dict:
    return child_env(RAY_AUTH_MODE="disabled", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_USAGE_STATS_ENABLED="0", **extra)


def _wait_for_nodes(address: str, count: int, env: dict, timeout: float = 120) -> None:
    """Until `count` nodes are alive (asked from a short-lived driver)."""
    probe = f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1] == str(count):
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes: {out.stderr[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def two_node_cluster(head_cpus: int = 1, worker_cpus: int = 1, worker_prefix: list[str] | None = None):
    """Yields the head's address. `worker_prefix` wraps the worker's command (e.g. in its own mount namespace)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = ray_env()
    common = ["--block", "--disable-usage-stats", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1"]
    logs = open(os.path.join(temp, "cluster.log"), "w")
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=false", f"--temp-dir={temp}", *common],
        env=env, stdout=logs, stderr=subprocess.STDOUT,
    )
    procs = [head]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if head.poll() is not None:
                raise RuntimeError(f"ray head exited: {Path(temp, 'cluster.log').read_text()[-2000:]}")
            time.sleep(0.5)
        worker_cmd = [RAY, "start", f"--address={address}", f"--num-cpus={worker_cpus}", *common]
        procs.append(subprocess.Popen([*(worker_prefix or []), *worker_cmd], env=env, stdout=logs, stderr=subprocess.STDOUT))
        _wait_for_nodes(address, 2, env)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        logs.close()
