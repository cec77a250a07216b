"""The reference blend's cost alone: median milliseconds of ``blend_references`` per frame, one thread.

    PYTHONPATH=. .venv/bin/python benchmarks/blend.py --model MODEL --dataset DATASET --label NAME

Renders ``--frames`` held-out frames with the model's references (``Renderer.render_float``) ``--repeat``
times per size, timing each call of the blend (``nerfvc.render.references.blend_references``: the fused
kernel where it is built) inside the render; the frame's whole time beside it. Writes one entry per
``--label`` into ``benchmarks/results/blend.json`` with its machine record. Run it at another commit with
``PYTHONPATH`` pointing at a worktree of that commit to compare blends on one machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import nerfvc.render.renderer as renderer_module
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--frames", type=int, default=4, help="held-out frames per size")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--label", required=True)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "blend.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    renderer = Renderer.from_model_dir(args.model)
    if renderer.references is None:
        raise SystemExit(f"error: {args.model} has no reference frames")
    picks = ds.test_idx[np.linspace(0, len(ds.test_idx) - 1, args.frames).astype(int)]
    blend = renderer_module.blend_references
    blend_s: list[float] = []

    def timed(*a, **k):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = blend(*a, **k)
        blend_s.append(time.perf_counter() - t)
        return out

    renderer_module.blend_references = timed
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        renderer.prepare_references(size, size)
        frame_s: list[float] = []
        for rep in range(args.repeat + 1):  # the first round warms up
            if rep == 1:
                blend_s.clear()
                frame_s.clear()
            for f in picks:
                t = time.perf_counter()
                renderer.render_float(ds.expression[f].numpy(), ds.pose[f].numpy(), size, size)
                frame_s.append(time.perf_counter() - t)
        results.append(
            {
                "size": size,
                "blend_ms": round(1e3 * float(np.median(blend_s)), 2),
                "frame_ms": round(1e3 * float(np.median(frame_s)), 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    entry = {
        "benchmark": "reference blend cost, one thread",
        "model": str(args.model),
        "frames": [int(f) for f in picks],
        "machine": machine_record(threads=1),
        "results": results,
    }
    data = json.loads(args.output.read_text()) if args.output.exists() else {}
    data[args.label] = entry
    args.output.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
