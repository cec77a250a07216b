"""The record of who measured: CPU, ISA flags, threads, versions, commit, date and the precision and kernel
choices in force (every file in ``benchmarks/results/`` and every eval ``results.json`` carries one)."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import torch

from nerfvc.field.fields import density_kernel, mlp_dtype
from nerfvc.field.frame import grid_storage, render_kernel
from nerfvc.machine import cpu_model, isa, precision_name


def machine_record(threads: int | None = None) -> dict:
    """Who measured a benchmark: CPU model, ISA flags, cores, threads, torch version, commit, date and the
    precision choice. Every file in ``benchmarks/results/`` carries one."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout.strip()
    return {
        "cpu_model": cpu_model(),
        "isa": isa(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": commit or None,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mlp_precision": precision_name(mlp_dtype()),
        "precision_forced": os.environ.get("NERFVC_PRECISION", "auto"),
        "density_kernel": {"rendering": density_kernel(), "training": density_kernel(backward=True)},
        "frame_renderer_kernel": render_kernel(),
        "grid_storage_rendering": grid_storage(),
        "kernel_forced": os.environ.get("NERFVC_KERNEL", "auto"),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
