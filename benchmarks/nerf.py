"""Receiver NeRF benchmark: train on the first 80% of a clip, score the last 20% with its tracked features.

    PYTHONPATH=. .venv/bin/python benchmarks/nerf.py --datasets german --minutes 12

For each dataset: PSNR/SSIM of every held-out frame at 256² (ground truth area-downsampled from the
dataset's 512²) and at 512² from the same model, the "freeze" baseline (first held-out frame shown for every
held-out frame), and render time per frame at 128/256/512. Writes ``benchmarks/results/nerf.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfvc.metrics import psnr, ssim
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset
from nerfvc.train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parent


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))


def _score(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    return psnr(pred, gt), ssim(pred, gt)


def bench_dataset(name: str, root: Path, work: Path, minutes: float, retrain: bool) -> dict:
    """Train (or reuse) a model for one dataset and score it."""
    model_dir = work / name
    result: dict = {"dataset": name, "train_minutes_budget": minutes}
    if retrain or not (model_dir / "model.json").exists():
        t = time.perf_counter()
        r = train(root / name, model_dir, TrainConfig(minutes=minutes, eval_frames=0))
        result["train"] = {
            "steps": r.steps,
            "seconds": round(r.seconds, 1),
            "wall_seconds": round(time.perf_counter() - t, 1),
        }
    else:
        result["train"] = json.loads((model_dir / "nerf.json").read_text())["trained"]
    ds = load_dataset(root / name)
    renderer = Renderer.from_model_dir(model_dir)
    result["threads"] = torch.get_num_threads()
    test = ds.test_idx
    for size in (256, 512):
        ps, ss, fps_, fss = [], [], [], []
        freeze = _resize(ds.frames[test[0]].numpy(), size)
        for f in test:
            gt = _resize(ds.frames[f].numpy(), size)
            img = renderer.render(ds.expression[f].numpy(), ds.pose[f].numpy(), size, size)
            p, s = _score(img, gt)
            ps.append(p)
            ss.append(s)
            p, s = _score(freeze, gt)
            fps_.append(p)
            fss.append(s)
            if f == test[len(test) // 2]:
                Image.fromarray(np.concatenate([gt, img], 1)).save(work / f"{name}_{size}_sample.png")
        result[f"{size}"] = {
            "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)),
            "frames": len(test),
            "freeze_psnr": float(np.mean(fps_)),
            "freeze_ssim": float(np.mean(fss)),
        }
    f = test[len(test) // 2]
    result["render_ms"] = {
        str(s): round(1000 * renderer.time_render(ds.expression[f].numpy(), ds.pose[f].numpy(), s, s), 1)
        for s in (128, 256, 512)
    }
    result["load_avg_1min"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["german"])
    ap.add_argument("--root", type=Path, default=Path("/work/data/datasets"))
    ap.add_argument("--work", type=Path, default=Path("work/bench_nerf"))
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--retrain", action="store_true", help="train even if a finished model exists")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "nerf.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = json.loads(args.output.read_text()) if args.output.exists() else {}
    out.update({"machine": machine_record()})
    out.setdefault("results", {})
    for name in args.datasets:
        out["results"][name] = bench_dataset(name, args.root, args.work, args.minutes, args.retrain)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out["results"][name], indent=2))


if __name__ == "__main__":
    main()
