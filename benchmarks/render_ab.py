"""Frame-renderer settings compared interleaved in one process, so that a VM whose speed drifts between runs
(±20–40% here) hits every setting alike: each round renders the same held-out frames with every setting in
turn; the best round per setting is reported.

    PYTHONPATH=. .venv/bin/python benchmarks/render_ab.py --model work/train_speed/auto_10_min \\
        --dataset /work/data/datasets/german --sizes 256,512 --label native
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NERFVC_CPP_MARCH=haswell PYTHONPATH=. \\
        .venv/bin/python benchmarks/render_ab.py ... --label avx2-emulated

Settings are :class:`nerfvc.render.fast.FastRenderConfig` overrides (``SETTINGS``). With ``--models A B ...``
instead of ``--model``, the models (e.g. two training recipes) are compared with the default settings.
Writes ``benchmarks/results/render_ab.json``, one entry per ``--label``, with its machine record.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import load_dataset

ROOT = Path(__file__).resolve().parent

SETTINGS: dict[str, dict] = {
    "torso on a 256 grid, every pixel (before 2026-12-01)": {"torso_size": 256, "skip_background": False},
    "torso at full resolution, every pixel": {"torso_size": 512, "skip_background": False},
    "background skipped below torso alpha 1e-3 (before 2026-12-02, sixteenth session)": {"torso_tail": 1e-3},
    "default (full resolution, background skipped below one 8-bit level)": {},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="compare the SETTINGS on this model")
    which.add_argument("--models", type=Path, nargs="+", help="compare these models, default settings")
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8, help="held-out frames per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--label", required=True)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "render_ab.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    step = max(1, len(ds.test_idx) // args.frames)
    frames = [int(i) for i in ds.test_idx[::step][: args.frames]]
    if args.models:  # name → (renderer, FastRenderConfig overrides)
        candidates = {str(m): (Renderer.from_model_dir(m), {}) for m in args.models}
    else:
        r = Renderer.from_model_dir(args.model)
        candidates = {name: (r, overrides) for name, overrides in SETTINGS.items()}
    defaults = {name: dict(vars(r.fast)) for name, (r, _) in candidates.items()}
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        ms: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, (r, overrides) in candidates.items():
                for k, v in {**defaults[name], **overrides}.items():
                    setattr(r.fast, k, v)
                r.render(ds.expression[frames[0]], ds.pose[frames[0]], size, size)  # warm-up
                t = time.perf_counter()
                for f in frames:
                    r.render(ds.expression[f], ds.pose[f], size, size)
                ms[name].append((time.perf_counter() - t) / len(frames) * 1000)
        for name, times in ms.items():
            row = {
                "size": size,
                "setting": name,
                "ms_best": round(min(times), 1),
                "ms_rounds": [round(t, 1) for t in times],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = json.loads(args.output.read_text()) if args.output.exists() else {}
    out[args.label] = {
        "benchmark": "frame renderer settings, interleaved",
        "model": str(args.model) if args.model else [str(m) for m in args.models],
        "frames": frames,
        "machine": machine_record(args.threads),
        "results": rows,
    }
    args.output.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
