"""Thread count for CPU training and rendering on a shared machine.

Measured here (2 cores shared with other jobs, load ≈ 7): a training step took 0.8 s with 2 OpenMP threads
(spinning threads fight the other jobs for the cores) and 0.095 s with 1. So: ``NERFVC_THREADS`` if set,
else 1 thread when the 1-minute load average already fills the cores, else torch's default.
"""

from __future__ import annotations

import os

import torch


def configure_threads() -> int:
    """Set torch's intra-op thread count as described above; returns it."""
    env = os.environ.get("NERFVC_THREADS")
    if env:
        torch.set_num_threads(max(1, int(env)))
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5:
        torch.set_num_threads(1)
    return torch.get_num_threads()
