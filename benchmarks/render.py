"""Receiver render speed and quality: the frame renderer's settings against the training renderer.

    PYTHONPATH=. .venv/bin/python benchmarks/render.py --model /work/data/models/german \
        --dataset /work/data/datasets/german
    NERFVC_PRECISION=fp32 PYTHONPATH=. .venv/bin/python benchmarks/render.py ... --label fp32

For every setting (the training renderer ``reference``, the frame renderer's default, other presets) and
size: PSNR against the ground truth on held-out frames (area-downsampled from the dataset's frames), PSNR
against the reference render, field points per frame, and render time per frame (median of ``--repeat``
renders, wall clock and process CPU time, at 1 and 2 threads), plus the throughput of 2 worker processes
rendering at 1 thread each (how the live receiver uses 2 cores). Writes ``benchmarks/results/render.json``,
one entry per ``--label`` (default: the ``NERFVC_PRECISION`` in force), each with its machine record.
"""

from __future__ import annotations

import argparse
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
from nerfvc.machine import machine_record
from nerfvc.metrics import psnr
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset

ROOT = Path(__file__).resolve().parent

SETTINGS: dict[str, dict | None] = {
    "reference": None,  # PortraitNeRF.render_rays on every ray, as in training
    "default": {},
    "fine24": {"n_fine": 24},
    "fine16": {"n_fine": 16},
    "fine8": {"n_fine": 8},
    "coarse32_fine8": {"n_fine": 8, "coarse_size": 32},
}


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))


def _points(renderer: Renderer) -> list[int]:
    """A counter of the points every hash-grid call of ``renderer``'s model encodes (torch kernel only)."""
    count = [0]
    for head in (renderer.model.coarse, renderer.model.fine):
        head.grid.register_forward_hook(lambda m, i, o: count.__setitem__(0, count[0] + len(i[0])))
    return count


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


def _worker(model: str, kw: dict, e: np.ndarray, p: np.ndarray, size: int, n: int, start, done) -> None:
    torch.set_num_threads(1)
    r = Renderer.from_model_dir(model)
    for k, v in kw.items():
        setattr(r.fast, k, v)
    r.render(e, p, size, size)  # warm-up
    start.wait()
    for _ in range(n):
        r.render(e, p, size, size)
    done.put(n)


def _workers_fps(model: Path, kw: dict, e: np.ndarray, p: np.ndarray, size: int, n: int) -> float:
    """Frames per second of 2 processes rendering ``n`` frames each at 1 thread, started together."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(model), kw, e, p, size, n, start, done)) for _ in range(2)]
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
    ap.add_argument("--sizes", default="128,256,512")
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
        for name, kw in SETTINGS.items():
            r = Renderer.from_model_dir(args.model, reference=kw is None)
            if kw is not None:
                for k, v in kw.items():
                    setattr(r.fast, k, v)
            count = _points(r)
            with field_settings(mlp_dtype(), "torch"):  # the grid hooks count points only outside fused
                imgs = [
                    r.render_float(ds.expression[f].numpy(), ds.pose[f].numpy(), size, size) for f in test
                ]
            points = count[0] / len(test)
            if kw is None:
                refs = imgs
            row: dict = {
                "setting": name,
                "config": None if kw is None else asdict(r.fast),
                "size": size,
                "psnr_gt": float(np.mean([psnr(a, b) for a, b in zip(imgs, gts)])),
                "psnr_vs_reference": float(np.mean([psnr(a, b) for a, b in zip(imgs, refs)])),
                "points_per_frame": round(points),
            }
            f = test[len(test) // 2]
            e, p = ds.expression[f].numpy(), ds.pose[f].numpy()
            for threads in (1, 2):
                torch.set_num_threads(threads)
                wall, cpu = _timed(r, e, p, size, args.repeat)
                row[f"ms_wall_{threads}t"] = round(1000 * wall, 1)
                row[f"ms_cpu_{threads}t"] = round(1000 * cpu, 1)
                row[f"fps_{threads}t"] = round(1 / wall, 2)
            if kw is not None:
                row["fps_2_workers"] = _workers_fps(args.model, kw, e, p, size, args.repeat)
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
