"""Torso-motion ablation: the same dataset, trained with and without the sender's torso shift.

    PYTHONPATH=. .venv/bin/python benchmarks/torso.py --dataset /work/data/datasets/german \
        --models torso=/work/data/models/german_t still=/work/data/models/german_still

Scores every held-out frame (tracked features, no coding) at ``--size``: PSNR over the whole frame, above
and below the torso band's top (``torso.json``; 0.7 when the dataset has none), SSIM and LPIPS. Writes
``benchmarks/results/torso.json`` (entries are keyed by dataset name and merged into an existing file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from nerfvc.eval.lpips import lpips_batch
from nerfvc.fsutil import read_json
from nerfvc.metrics import psnr, ssim
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--models", nargs="+", required=True, help="NAME=MODEL_DIR ...")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "torso.json")
    args = ap.parse_args()
    ds = load_dataset(args.dataset, frames=True)
    meta = args.dataset / "torso.json"
    top = read_json(meta).get("top") if meta.exists() else None
    split = round((top or 0.7) * args.size)
    gts = [
        np.asarray(Image.fromarray(ds.frames[f].numpy()).resize((args.size,) * 2, Image.Resampling.BOX))
        for f in ds.test_idx
    ]
    inputs = ds.expression.numpy()
    entry: dict = {"frames": len(gts), "size": args.size, "band_top": top, "split_row": split, "models": {}}
    for spec in args.models:
        name, path = spec.split("=", 1)
        r = Renderer.from_model_dir(path)
        x = inputs[:, : r.expression_dim]  # a model without torso motion takes the expression only
        imgs = [r.render(x[f], ds.pose[f].numpy(), args.size, args.size) for f in ds.test_idx]
        a, b = imgs, gts
        lp = lpips_batch(np.stack(imgs), np.stack(gts))
        entry["models"][name] = {
            "model": path,
            "torso_dims": r.model.cfg.torso_dims,
            "train": read_json(Path(path) / "nerf.json").get("trained"),
            "psnr": float(np.mean([psnr(p, g) for p, g in zip(a, b)])),
            "psnr_above": float(np.mean([psnr(p[:split], g[:split]) for p, g in zip(a, b)])),
            "psnr_below": float(np.mean([psnr(p[split:], g[split:]) for p, g in zip(a, b)])),
            "ssim": float(np.mean([ssim(p, g) for p, g in zip(a, b)])),
            "lpips": float(np.mean(lp)),
        }
        print(name, json.dumps(entry["models"][name]), flush=True)
    out = json.loads(args.output.read_text()) if args.output.exists() else {}
    out.update(
        {
            "benchmark": "torso-motion ablation (held-out frames, tracked features, no coding)",
            "machine": machine_record(),
        }
    )
    out.setdefault("results", {})[args.dataset.name] = entry
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
