"""Thread count for CPU training and rendering on a shared machine.

Measured here (2 cores shared with other jobs, load ≈ 7): a training step took 0.8 s with 2 OpenMP threads
(spinning threads fight the other jobs for the cores) and 0.095 s with 1. So: ``NERFVC_THREADS`` if set,
else 1 thread while *other* processes fill the cores, else the count as it was (torch's default unless the
caller set one).

"Other" matters: the 1-minute load average counts this process too, so a sequential batch (train, eval,
then the next clip's training in one process) read its own previous step as a busy machine and trained
every clip after the first on one thread (7 of the 8 clips of the 10-minute batch in ``benchmarks/results``).
On Linux the busy cores are measured over a short interval from ``/proc/stat`` minus this process's own CPU
time (``/proc/self/stat``); elsewhere the load average is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

_LOWERED_FROM: list[int] = []  # the thread count configure_threads lowered to 1, to restore

Snapshot = tuple[float, float, float]  # (all CPU time, idle CPU time, this process's CPU time), in ticks


def _proc_snapshot() -> Snapshot | None:
    """CPU time counters of the machine and of this process (None where /proc is not there)."""
    try:
        with open("/proc/stat") as f:
            cpu = [float(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, ValueError, IndexError):
        return None
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0.0)  # idle + iowait
    return sum(cpu[:8]), idle, float(own[11]) + float(own[12])  # utime + stime


def busy_cores(
    interval: float = 0.1, snapshot: Callable[[], Snapshot | None] = _proc_snapshot
) -> float | None:
    """Cores kept busy by other processes over the next ``interval`` seconds (None without /proc)."""
    a = snapshot()
    time.sleep(interval)
    b = snapshot()
    if a is None or b is None or b[0] <= a[0]:
        return None
    cores = os.cpu_count() or 1
    busy = (b[0] - a[0]) - (b[1] - a[1]) - (b[2] - a[2])  # all busy ticks minus our own
    return max(0.0, busy) / (b[0] - a[0]) * cores


def configure_threads(busy: Callable[[], float | None] = busy_cores) -> int:
    """Set torch's intra-op thread count as described above; returns it. A count set by the caller is kept
    unless other processes crowd the cores; one this function lowered comes back once they no longer do."""
    env = os.environ.get("NERFVC_THREADS")
    if env:
        torch.set_num_threads(max(1, int(env)))
        return torch.get_num_threads()
    others = busy()
    if others is None and hasattr(os, "getloadavg"):
        others = os.getloadavg()[0]
    if others is not None and others >= (os.cpu_count() or 1) - 0.5:
        if torch.get_num_threads() != 1:
            _LOWERED_FROM[:] = [torch.get_num_threads()]
            torch.set_num_threads(1)
    elif _LOWERED_FROM:
        if torch.get_num_threads() == 1:  # still what this function set
            torch.set_num_threads(_LOWERED_FROM[0])
        _LOWERED_FROM.clear()
    return torch.get_num_threads()
