"""``nerfvc batch`` in-process vs on a local Ray, on a few small clips with a tiny budget, and the planned
throughput on N machines from the measured per-task times.

    PYTHONPATH=. .venv/bin/python benchmarks/batch.py [--clips may,obama] [--minutes 1] \
        [--eval "--sizes 256 --kbps 1.5 --codecs x265 --max-frames 10 --dists-frames 0"] \
        [--work work/bench-batch] [-o benchmarks/results/batch.json]

Each mode starts from an empty ``WORK/<mode>/`` (so nothing is cached). ``task_cpu_s`` is the sum over tasks
of the CPU time of the process running it, including its finished children (the encoders), in both modes.
``cpu_s`` is the whole run: in-process, the driver's CPU time with its children; on Ray, the tasks' plus the
driver's own (Ray's daemons, GCS and raylet, are not counted; ``driver_children_cpu_s`` holds what of them
was reaped). The C++ kernels (hash grid, fused) are built before timing, in a private
``WORK/torch_extensions``. The plan assumes machines like this one and one clip's steps on one CPU each.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from clips import CLIPS, select

from nerfvc.batch import BatchConfig, parse_eval_options, run_batch
from nerfvc.fsutil import read_json, write_json_atomic
from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """Who measured (``machine_record``), with the Python and Ray versions."""
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return machine_record() | {"python": platform.python_version(), "ray": ray_version}


def makespan(clip_seconds: list[float], slots: int) -> float:
    """Longest-first list scheduling of whole clips (their steps are serial) onto ``slots`` CPUs."""
    loads = [0.0] * max(1, slots)
    for t in sorted(clip_seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + t)
    return max(loads)


def plan(per_clip: dict[str, dict[str, float]], cores: int, machines: list[int], many: int = 400) -> dict:
    """Planned wall time and clips/hour for these clips, and for ``many`` clips like them (the measured ones
    repeated), on N machines of ``cores`` 1-CPU task slots."""
    totals = [sum(s.values()) for s in per_clip.values()]
    lots = [totals[i % len(totals)] for i in range(many)]
    rows = []
    for n in machines:
        wall, wall_many = makespan(totals, n * cores), makespan(lots, n * cores)
        rows.append({"machines": n, "slots": n * cores, "minutes": round(wall / 60, 2),
                     f"hours_for_{many}": round(wall_many / 3600, 2),
                     f"clips_per_hour_for_{many}": round(many / wall_many * 3600, 1)})  # fmt: skip
    return {"clips": len(totals), "clip_seconds_mean": round(sum(totals) / len(totals), 1), "machines": rows}


def add_plan(result: dict, machines: list[int]) -> None:
    """``result["plan"]`` from its measured per-task times and the per-step times of clips.json."""
    cores = result["machine"]["cores"] or 1
    full = read_json(ROOT / "benchmarks" / "results" / "clips.json")
    full_steps = {r["clip"]: r["seconds"] for r in full["clips"] if r.get("status") == "ok"}
    result["plan"] = {
        "note": "makespan of whole clips (prepare+train+eval serial) on N machines × cores 1-CPU slots, "
        "longest first; per-task times as measured (shared machine), Ray overhead not included",
        "tiny (this run, Ray per-task times)": plan(
            result["modes"]["ray_auto"]["task_seconds"], cores, machines
        ),
        "8 shared clips, 6-min training (benchmarks/results/clips.json per-step times)": plan(
            full_steps, cores, machines
        ),
    }


def run_mode(name: str, cfg: BatchConfig, videos: list[Path], ray: str | None) -> dict:
    """One batch from an empty work dir; wall and CPU time, per-task times."""
    cfg = dataclasses.replace(cfg, work=cfg.work / name)
    shutil.rmtree(cfg.work, ignore_errors=True)
    load0 = os.getloadavg()[0]
    t, c0 = time.perf_counter(), os.times()
    s = run_batch(cfg, videos, cfg.work / "summary", ray=ray, command=f"benchmarks/batch.py ({name})")
    wall, c1 = time.perf_counter() - t, os.times()
    driver_self = c1.user + c1.system - c0.user - c0.system
    driver_children = c1.children_user + c1.children_system - c0.children_user - c0.children_system
    rows = {r["clip"]: r for r in s["clips"]}
    task_cpu = sum(sum(r.get("cpu_seconds", {}).values()) for r in rows.values())
    # in-process the tasks are the driver's own CPU time; on Ray they ran in the workers
    cpu = driver_self + driver_children if ray is None else task_cpu + driver_self
    return {
        "executor": s["executor"],
        "status": {k: r["status"] for k, r in rows.items()},
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "task_cpu_s": round(task_cpu, 1),
        "driver_cpu_s": round(driver_self, 1),
        "driver_children_cpu_s": round(driver_children, 1),
        "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "task_seconds": {k: r.get("seconds", {}) for k, r in rows.items()},
        "task_cpu_seconds": {k: r.get("cpu_seconds", {}) for k, r in rows.items()},
        "nerfvc_psnr": {k: (r.get("nerfvc") or {}).get("psnr") for k, r in rows.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="may,obama")
    ap.add_argument("--clips-dir", default=str(CLIPS))
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--eval", default="--sizes 256 --kbps 1.5 --codecs x265 --max-frames 10 --dists-frames 0")
    ap.add_argument("--work", default="work/bench-batch")
    ap.add_argument("--machines", default="1,2,4,8,16", help="N for the planned throughput")
    ap.add_argument("-o", "--out", default="benchmarks/results/batch.json")
    ap.add_argument("--plan-only", action="store_true", help="only recompute the plan of an existing -o")
    args = ap.parse_args()
    machines = [int(n) for n in args.machines.split(",")]
    if args.plan_only:
        result = read_json(args.out)
        add_plan(result, machines)
        write_json_atomic(args.out, result)
        return 0
    videos = select(args.clips, sorted(Path(args.clips_dir).glob("*.mp4")))
    cfg = BatchConfig(work=Path(args.work), minutes=args.minutes, **parse_eval_options(args.eval))
    info = machine()
    # a private build dir of the C++ kernels, built once before timing: the shared torch_extensions cache is
    # rebuilt (~40-60 s) whenever a checkout with other paths (another venv) used it last
    from nerfvc.field.encodings import load_cpp_extension
    from nerfvc.field.fused import load_fused_extension

    os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(args.work).resolve() / "torch_extensions")
    t = time.perf_counter()
    load_cpp_extension()
    load_fused_extension()
    info["kernel_build_s"] = round(time.perf_counter() - t, 1)
    modes = {"sequential": run_mode("sequential", cfg, videos, None)}
    modes["ray_auto"] = run_mode("ray_auto", cfg, videos, "auto")
    result = {
        "command": "python benchmarks/batch.py " + " ".join(sys.argv[1:]),
        "machine": info,
        "config": {"clips": [v.stem for v in videos], "minutes": args.minutes, "eval": args.eval},
        "modes": modes,
        "speedup_wall": round(modes["sequential"]["wall_s"] / modes["ray_auto"]["wall_s"], 2),
    }
    add_plan(result, machines)
    write_json_atomic(args.out, result)
    print(
        f"wrote {args.out}: sequential {modes['sequential']['wall_s']} s, ray {modes['ray_auto']['wall_s']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
