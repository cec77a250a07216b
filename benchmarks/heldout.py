"""Held-out quality of trained models at one size: the dataset's test frames rendered from their tracked
(unquantized) features → PSNR, LPIPS and CSIM (every 5th frame) per model, for comparing training recipes.

    PYTHONPATH=. .venv/bin/python benchmarks/heldout.py --dataset /work/data/datasets/german --size 512 \\
        --label perceptual work/perc/german_base work/perc/german_perc

``--render-sizes 256,224,192`` renders at each of those sizes and upscales to ``--size`` as the live
receiver does when it falls behind (``nerfvc.live.adapt``), one model entry per render size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerfvc.datasetdir import dataset_split, frame_path, read_features, read_manifest
from nerfvc.eval.lpips import lpips_batch
from nerfvc.eval.metrics import csim
from nerfvc.features import model_inputs
from nerfvc.fsutil import read_json, write_json_atomic
from nerfvc.live.adapt import upscale
from nerfvc.metrics import psnr
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_rgb

ROOT = Path(__file__).resolve().parents[1]


def heldout_ground_truth(dataset: Path, size: int) -> np.ndarray:
    """The dataset's test-split frames, area-resized to size² → (N, size, size, 3) uint8."""
    _, (c, d) = dataset_split(read_manifest(dataset))
    return np.stack([load_rgb(frame_path(dataset, i), (size, size)) for i in range(c, d)])


def render_frames(
    renderer: Renderer, code: np.ndarray, pose: np.ndarray, size: int, render_size: int | None = None
) -> np.ndarray:
    """Model inputs (N,E) and poses (N,12) rendered at render_size² (default size) and upscaled to size² →
    (N, size, size, 3) uint8."""
    r = render_size or size
    return np.stack([upscale(renderer.render(x, p, r, r), size) for x, p in zip(code, pose)])


def pixel_scores(frames: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean PSNR and LPIPS of ``frames`` against ``gt`` (both (N,H,W,3) uint8)."""
    return {
        "psnr": float(np.mean([psnr(o, g) for o, g in zip(frames, gt)])),
        "lpips": float(np.mean(lpips_batch(np.ascontiguousarray(frames), gt))),
    }


def score(model: Path, dataset: Path, size: int, render_size: int | None = None) -> dict:
    """Mean PSNR / LPIPS / CSIM of ``model`` on ``dataset``'s test frames at size² (rendered at
    render_size² and upscaled when given)."""
    manifest = read_manifest(dataset)
    _, (c, d) = dataset_split(manifest)
    feats = read_features(dataset, manifest)
    gt = heldout_ground_truth(dataset, size)
    out = render_frames(
        Renderer.from_model_dir(model), model_inputs(feats, model)[c:d], feats["pose"][c:d], size, render_size
    )
    trained = read_json(model / "nerf.json").get("trained", {})
    return {
        "model": str(model),
        "steps": trained.get("steps"),
        "render_size": render_size or size,
        **pixel_scores(out, gt),
        "csim": float(np.mean([csim(o, g) for o, g in zip(out[::5], gt[::5])])),
        "frames": int(d - c),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--render-sizes", default="", help="render at these sizes and upscale to --size")
    ap.add_argument("--label", required=True, help="entry name in the output JSON")
    ap.add_argument("--note", default="", help="what the models differ in")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "heldout.json")
    args = ap.parse_args()
    results = read_json(args.output) if args.output.exists() else {}
    results[args.label] = {
        "machine": machine_record(),
        "dataset": str(args.dataset),
        "size": args.size,
        "note": args.note,
        "models": [
            score(m, args.dataset, args.size, r)
            for m in args.models
            for r in ([int(v) for v in args.render_sizes.split(",")] if args.render_sizes else [None])
        ],
    }
    for m in results[args.label]["models"]:
        print(json.dumps(m))
    write_json_atomic(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
