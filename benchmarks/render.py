"""Receiver render speed and quality: the frame renderer's settings against the training renderer.

    PYTHONPATH=. .venv/bin/python benchmarks/render.py --model /work/data/models/german \
        --dataset /work/data/datasets/german
    NERFVC_PRECISION=fp32 PYTHONPATH=. .venv/bin/python benchmarks/render.py ... --label fp32

For every setting (the training renderer ``reference``, the frame renderer's default — fused C++ kernels
where this machine chose them —, the frame renderer on pure-torch kernels, other presets) and size: PSNR
against the ground truth on held-out frames (area-downsampled from the dataset's frames), PSNR against the
reference render, field points per frame (counted on one frame by the torch kernels), and render time per
frame (median of ``--repeat`` renders, wall clock and process CPU time, at 1 and 2 threads), plus the
throughput of 2 worker processes rendering at 1 thread each (how the live receiver uses 2 cores). The
training renderer runs up to ``--reference-max`` px. Writes ``benchmarks/results/render.json``, one entry per
``--label`` (default: the ``NERFVC_PRECISION`` in force), each with its machine record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfvc.field.fields import field_settings, mlp_dtype
from nerfvc.metrics import psnr
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset

ROOT = Path(__file__).resolve().parent

# name: (FastRenderConfig fields, kernel: "auto" = as this machine chose, "torch" = pure torch); None = the
# training renderer (PortraitNeRF.render_rays on every ray). "references": False renders without the model's
# reference texture (nerfvc.render.references).
SETTINGS: dict[str, tuple[dict, str] | None] = {
    "reference": None,
    "default": ({}, "auto"),
    "no_references": ({"references": False}, "auto"),
    "torch_kernels": ({}, "torch"),
    "float32_tables": ({"half_tables": False}, "auto"),
    "float16_tables": ({"half_tables": True}, "auto"),
    "fine16": ({"n_fine": 16}, "auto"),
    "fine8": ({"n_fine": 8}, "auto"),
    "torso_tail_1e-3": ({"torso_tail": 1e-3}, "auto"),  # the torso's skip threshold before 2026-12-02
    "tail_1e-3": ({"tail": 1e-3}, "auto"),  # the head's skip threshold before 2026-12-05
    "coarse_proposal": ({"proposal": "coarse"}, "auto"),  # the coarse field alone places the fine samples
    "both_proposal": ({"proposal": "both"}, "auto"),
}


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))


def _points(r: Renderer, e: np.ndarray, p: np.ndarray, size: int) -> int:
    """Points the hash grids encode while ``r`` renders one frame on the torch kernels (every grid read, the
    training renderer's and the frame renderer's, goes through ``HashGrid.lookup``)."""
    count = [0]
    grid_cls = type(r.model.fine.grid)
    lookup = grid_cls.lookup

    def counted(self, x, table, res):
        count[0] += len(x)
        return lookup(self, x, table, res)

    grid_cls.lookup = counted
    try:
        with field_settings(mlp_dtype(), "torch"):
            r.render_float(e, p, size, size)
    finally:
        grid_cls.lookup = lookup
    return count[0]


def _timed(r: Renderer, e: np.ndarray, p: np.ndarray, size: int, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeat`` renders after one warm-up."""
    r.render(e, p, size, size)
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        r.render(e, p, size, size)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def _renderer(model: str | Path, kw: dict) -> Renderer:
    r = Renderer.from_model_dir(model, references=kw.get("references", True))
    for k, v in kw.items():
        if k != "references":
            setattr(r.fast, k, v)
    return r


def _kernels(kernel: str) -> contextlib.AbstractContextManager:
    """Inside: the frame renderer on ``kernel`` ("auto": as this machine chose)."""
    return contextlib.nullcontext() if kernel == "auto" else field_settings(mlp_dtype(), kernel)


def _worker(model: str, setting: tuple, e: np.ndarray, p: np.ndarray, size: int, n: int, start, done) -> None:
    torch.set_num_threads(1)
    kw, kernel = setting
    r = _renderer(model, kw)
    with _kernels(kernel):
        r.render(e, p, size, size)  # warm-up
        start.wait()
        for _ in range(n):
            r.render(e, p, size, size)
    done.put(n)


def _workers_fps(model: Path, setting: tuple, e: np.ndarray, p: np.ndarray, size: int, n: int) -> float:
    """Frames per second of 2 processes rendering ``n`` frames each at 1 thread, started together."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(model), setting, e, p, size, n, start, done)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    start.wait()
    t = time.perf_counter()
    frames = done.get() + done.get()
    wall = time.perf_counter() - t
    for proc in procs:
        proc.join()
    return round(frames / wall, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("/work/data/models/german"))
    ap.add_argument("--dataset", type=Path, default=Path("/work/data/datasets/german"))
    ap.add_argument("--sizes", default="128,256,512,1024")
    ap.add_argument(
        "--reference-max", type=int, default=512, help="largest size the training renderer runs at"
    )
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of the settings")
    ap.add_argument("--frames", type=int, default=8, help="held-out frames scored per size")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--label", default=os.environ.get("NERFVC_PRECISION", "auto"))
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "render.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ds = load_dataset(args.dataset)
    test = ds.test_idx[np.linspace(0, len(ds.test_idx) - 1, args.frames).round().astype(int)]
    out: dict = {
        "benchmark": "receiver render speed and quality",
        "model": str(args.model),
        "frames": [int(f) for f in test],
        "machine": machine_record(),
        "results": [],
    }
    for size in sizes:
        gts = [torch.from_numpy(_resize(ds.frames[f].numpy(), size)).float() / 255 for f in test]
        refs: list[torch.Tensor] = []
        for name in args.settings.split(","):
            setting = SETTINGS[name]
            if setting is None and size > args.reference_max:
                continue
            kw, kernel = setting or ({}, "auto")
            r = (
                Renderer.from_model_dir(args.model, reference=True)
                if setting is None
                else _renderer(args.model, kw)
            )
            with _kernels(kernel):
                imgs = [
                    r.render_float(ds.expression[f].numpy(), ds.pose[f].numpy(), size, size) for f in test
                ]
            if setting is None:
                refs = imgs
            f = test[len(test) // 2]
            e, p = ds.expression[f].numpy(), ds.pose[f].numpy()
            row: dict = {
                "setting": name,
                "kernel": None if setting is None else kernel,
                "config": None if setting is None else asdict(r.fast),
                "references": r.references is not None,
                "size": size,
                "psnr_gt": float(np.mean([psnr(a, b) for a, b in zip(imgs, gts)])),
                "psnr_vs_reference": float(np.mean([psnr(a, b) for a, b in zip(imgs, refs)]))
                if refs
                else None,
                "points_per_frame": _points(r, e, p, size),
            }
            with _kernels(kernel):
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    wall, cpu = _timed(r, e, p, size, args.repeat)
                    row[f"ms_wall_{threads}t"] = round(1000 * wall, 1)
                    row[f"ms_cpu_{threads}t"] = round(1000 * cpu, 1)
                    row[f"fps_{threads}t"] = round(1 / wall, 2)
            if setting is not None:
                row["fps_2_workers"] = _workers_fps(args.model, setting, e, p, size, args.repeat)
            out["results"].append(row)
            print(json.dumps(row), flush=True)
    out["load_avg_1min_end"] = os.getloadavg()[0]
    everything = json.loads(args.output.read_text()) if args.output.exists() else {}
    everything = everything if "benchmark" not in everything else {}  # an older single-run file
    everything[args.label] = out
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(everything, indent=2) + "\n")


if __name__ == "__main__":
    main()
