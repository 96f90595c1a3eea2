"""How many threads each process of a run computes with (`runtime.threads`), decided once and kept by the run.

`auto` is the share of the cores this process may use: the smallest of its CPU affinity, a
cgroup CPU quota, Slurm's CPUs per task, an `OMP_NUM_THREADS` someone else set (a user, or Ray
for its workers) and a torch thread count the program calling `run()` chose, divided among
the processes of the run that share them (ranks dtrain or Lightning start here), less the cores
other processes keep busy while torch loads (a second or two, measured from /proc/stat), and
shared with the other dtrain runs on the same cores (dtrain.launch.core_shares): two runs started
side by side take one core each of two, instead of both waiting on both. The number is written into the
run's config, and a resumed, retried or requeued run in the same directory keeps it (a
reduction over another thread count can change the bits).

Threads left idle wait passively (`OMP_WAIT_POLICY=PASSIVE`, unless the user chose a wait
policy): a thread that finished its part of an op sleeps instead of spinning on a core another
process needs, which is what made a busy machine up to 100x slower per step. OpenMP reads it
once, when torch loads: it is set before dtrain first imports torch, and inherited by every
process the run starts.
"""

import logging
import math
import os
import resource
import time
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

KEY = "runtime.threads"
AUTO = "auto"
# Any of these set by the user is their choice of how OpenMP threads wait; dtrain adds none then.
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = "/proc/stat"
# Set by dtrain.launch.local in the ranks it starts: the run's first process holds their share.
SHARE_TAKEN = "DTRAIN_CORE_SHARE_TAKEN"

log = logging.getLogger(__name__)

# The torch thread count dtrain itself set in this process (a test or a sweep runs several runs in
# one), so that a later run does not take it for the caller's choice.
_set_here: dict[str, int | None] = {"torch": None}


def _positive(text: str | None) -> int | None:
    """The first number of an OpenMP or Slurm count ("4", "4,2", "8(x2)"), if positive."""
    digits = ""
    for char in (text or "").strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits and int(digits) > 0 else None


def _cgroup_cpus() -> int | None:
    """A CPU quota of this container (cgroup v2 `cpu.max`, or v1's cfs quota), rounded up."""
    root = CGROUP_ROOT
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = ((root / "cpu" / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        except OSError:
            return None
    if quota in ("max", "-1") or not period.isdigit() or int(period) == 0 or not quota.isdigit():
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _slurm_cpus() -> int | None:
    """The CPUs Slurm gave each task of this job (inside a job only)."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    per_task = _positive(os.environ.get("SLURM_CPUS_PER_TASK"))
    if per_task:
        return per_task
    per_node, tasks = _positive(os.environ.get("SLURM_JOB_CPUS_PER_NODE")), _positive(os.environ.get("SLURM_TASKS_PER_NODE"))
    return max(1, per_node // tasks) if per_node and tasks and "SLURM_STEP_ID" in os.environ else None


def _launched_externally() -> bool:
    """torchrun, srun or Ray started this process as one rank: its allotment is its own."""
    return any(name in os.environ for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_STEP_ID"))


def allotment() -> tuple[int, str]:
    """How many cores this process may compute on, and who said so."""
    limits = [(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, "CPU affinity")]
    limits.append((_cgroup_cpus(), "cgroup CPU quota"))
    limits.append((_slurm_cpus(), "Slurm's CPUs per task"))
    limits.append((_positive(os.environ.get("OMP_NUM_THREADS")), "OMP_NUM_THREADS"))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads") and torch.get_num_threads() != _set_here["torch"]:
        # Only a caller's own torch.set_num_threads() can make it smaller than the others.
        limits.append((torch.get_num_threads(), "this process's torch threads"))
    if _launched_externally() and os.environ.get("LOCAL_WORLD_SIZE", "").isdigit():  # torchrun's ranks share the node
        local = int(os.environ["LOCAL_WORLD_SIZE"])
        limits.append((max(1, limits[0][0] // local), f"CPU affinity shared by {local} torchrun ranks"))
    return min(((n, why) for n, why in limits if n), key=lambda limit: limit[0])


def resolve(value, processes: int = 1) -> tuple[int, str]:
    """The thread count of each process for `runtime.threads=value` (an int, or auto) and why."""
    if value != AUTO:
        return int(value), f"{KEY}={value}"
    cores, source = allotment()
    said = f"{cores} core{'s' if cores != 1 else ''} ({source})"
    if processes > 1 and not _launched_externally():  # dtrain's launcher or Lightning starts them all here
        return max(1, cores // processes), f"{said} shared by {processes} processes"
    return cores, said


def recorded_threads(run_dir: Path) -> int | None:
    """The count a run directory's saved config holds (a run that is being continued)."""
    from dtrain.run_dir import CONFIG_FILE, load_config

    if not (run_dir / CONFIG_FILE).is_file():
        return None
    value = OmegaConf.select(load_config(run_dir), KEY, default=None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def set_wait_policy() -> None:
    """Idle OpenMP threads sleep instead of spinning (see the module's docstring). Read by OpenMP
    when torch is first imported, and inherited by every process started from this one."""
    if not any(name in os.environ for name in WAIT_POLICY_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def import_torch():
    """torch, loaded after the wait policy is set: for the first of dtrain's imports of torch in a
    process (a device check's, or run()'s)."""
    set_wait_policy()
    import torch

    return torch


def apply_threads(threads: int) -> None:
    """Compute with `threads` threads in this process (dtrain.launch.local passes the count on to
    the processes the run starts)."""
    import torch

    torch.set_num_threads(threads)
    _set_here["torch"] = threads
    try:
        torch.set_num_interop_threads(threads)  # allowed once per process, before any inter-op work
    except RuntimeError:
        pass


def _cpu_jiffies(cores: set[int]) -> tuple[int, int]:
    """(all, idle) clock ticks the kernel counted on `cores` since boot (/proc/stat)."""
    total = idle = 0
    for line in Path(PROC_STAT).read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(f) for f in fields[:8]]
            total, idle = total + sum(ticks), idle + ticks[3] + ticks[4]  # idle and iowait
    return total, idle


def _own_cpu_ticks() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * os.sysconf("SC_CLK_TCK")


def others_busy_cores(cores: set[int], work) -> float:
    """How many of `cores` other processes kept busy while `work()` ran in this one (which
    should take a second or so: a shorter window says nothing and counts as none)."""
    try:
        (total0, idle0), own0 = _cpu_jiffies(cores), _own_cpu_ticks()
    except (OSError, ValueError):
        work()
        return 0.0
    work()
    (total1, idle1), own1 = _cpu_jiffies(cores), _own_cpu_ticks()
    per_core = (total1 - total0) / max(1, len(cores))
    if per_core < 20:  # under 0.2 s at the usual 100 ticks a second
        return 0.0
    return max(0.0, ((total1 - total0) - (idle1 - idle0) - (own1 - own0)) / per_core)


def _age() -> float:
    """Seconds since this process started (0 where /proc does not say)."""
    try:
        started = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return 0.0


def _clock_of_this_run():
    """Seconds since this run began: since the process started for its first run, since now for
    a later run in a process that has loaded torch already (a reused sweep actor, a test process,
    a notebook), whose own start long ago says nothing of when a run beside it began."""
    if "torch" not in sys.modules:
        return _age
    began = time.monotonic()
    return lambda: time.monotonic() - began


def _cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def settle_threads(cfg: DictConfig, processes: int, run_dir: Path) -> int:
    """Decide `runtime.threads` for this run (kept from the run directory when it is being
    continued), write the number into `cfg` before its config is saved, and apply it."""
    from dtrain.launch import core_shares

    set_wait_policy()  # first: torch may be imported below
    value = OmegaConf.select(cfg, KEY, default=AUTO)
    recorded = recorded_threads(run_dir) if value == AUTO else None
    here = processes if processes > 1 and not _launched_externally() else 1  # this run's processes on these cores
    counted = SHARE_TAKEN in os.environ  # a rank dtrain started: the run's first process took the share of all
    if recorded is not None:
        threads, why = recorded, "kept from the run's saved config"
    elif value == AUTO and not counted:
        elapsed = _clock_of_this_run()
        core_shares.announce(_cores())
        announced = elapsed()
        # The second or two torch takes to load: runs started alongside this one announce
        # themselves meanwhile, and what other processes keep busy shows.
        busy = others_busy_cores(_cores(), import_torch)
        # A run started at the same moment reaches its announcement about as late as this one
        # did: wait for it that long (torch's import usually took longer already).
        time.sleep(max(0.0, min(2.0, 2 * announced - elapsed())))
        threads, why = resolve(value, processes)
        idle = max(1, len(_cores()) - round(busy))
        total, others = core_shares.take(_cores(), min(threads * here, idle))
        if total < threads * here:
            threads = max(1, total // here)
            why += f", {busy:.1f} busy with other processes" + (f", shared with {others} other dtrain run(s)" if others else "")
    else:
        threads, why = resolve(value, processes)
    if not counted and (recorded is not None or value != AUTO):
        core_shares.take(_cores(), threads * here)  # others see what this run holds
    with open_dict(cfg):
        OmegaConf.update(cfg, KEY, threads, force_add=True)
    apply_threads(threads)
    log.debug("threads: %d per process (%s)", threads, why)
    return threads


def release() -> None:
    """The run has ended here: the next run may take its cores."""
    from dtrain.launch import core_shares

    core_shares.withdraw()
