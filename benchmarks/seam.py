"""Seams where the head layer ends (issue 16): does a render draw edges the camera frame does not have?

    PYTHONPATH=. .venv/bin/python benchmarks/seam.py --work work/bench43 --size 512 -o benchmarks/results/seam

For each clip under ``--work`` (``benchmarks/clips.py``'s layout: ``CLIP/dataset``, ``CLIP/<--model>``)
renders ``--frames`` training and ``--frames`` held-out frames from their tracked features (not coded) with
the receiver's renderer and references, and measures the steps between neighbouring pixels
(:mod:`nerfvc.eval.seam`) where the head layer's opacity crosses 0.5 over what the truth labels torso
(``seam``) or background (``outline``), inside the head layer (``interior``) and across the head box's
screen outline where the head layer is drawn (``box``); also the share of the truth's head pixels whose rays
miss the head box. Writes ``-o``.json (with the machine record) and ``-o``.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerfvc.eval.seam import PAIR_SETS, edge_jumps, pooled
from nerfvc.face.segment import HEAD
from nerfvc.fsutil import write_bytes_atomic, write_json_atomic
from nerfvc.record import machine_record
from nerfvc.render.rays import intersect_box, pixel_rays, to_canonical
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import PortraitDataset, load_dataset


def box_footprint(renderer: Renderer, dirs: torch.Tensor, pose: torch.Tensor, size: int) -> np.ndarray:
    """(size,size) bool: which rays ``dirs`` (size²,3) hit the model's head box at ``pose`` (12,)."""
    model = renderer.model
    origin, direction = to_canonical(dirs, pose.reshape(1, 12))
    _, _, hit = intersect_box(origin, direction, model.head_lo, model.head_hi)
    return hit.view(size, size).numpy()


def measure_split(renderer: Renderer, ds: PortraitDataset, frames: np.ndarray, size: int) -> dict:
    """The pooled steps and the head pixels outside the box over ``frames`` of ``ds`` (loaded at ``size``)."""
    per_frame, outside, head = [], 0, 0
    dirs, _ = pixel_rays(renderer.camera.scaled(size, size))  # (size²,3), the same for every frame
    for f in frames:
        img, alpha = renderer.render_with_opacity(ds.expression[f].numpy(), ds.pose[f].numpy(), size, size)
        render = img.mul(255).add_(0.5).byte().numpy()
        labels = ds.masks[f].numpy()
        box = box_footprint(renderer, dirs, ds.pose[f], size)
        per_frame.append(edge_jumps(render, ds.frames[f].numpy(), alpha.numpy(), labels, box))
        is_head = labels == HEAD
        outside += int((is_head & ~box).sum())
        head += int(is_head.sum())
    return {
        "frames": [int(f) for f in frames],
        "steps": pooled(per_frame),
        "head_outside_box": outside / max(head, 1),
    }


def clip_entry(clip_dir: Path, model: str, size: int, n_frames: int) -> dict:
    """Both splits of one clip."""
    ds = load_dataset(clip_dir / "dataset", size)
    renderer = Renderer.from_model_dir(clip_dir / model)
    out = {"clip": clip_dir.name}
    for split, idx in (("train", ds.train_idx), ("held-out", ds.test_idx)):
        picks = idx[np.linspace(0, len(idx) - 1, min(n_frames, len(idx))).astype(int)]
        out[split] = measure_split(renderer, ds, picks, size)
        print(clip_dir.name, split, out[split]["steps"], flush=True)
    return out


def _cell(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.1f}"


def markdown(entry: dict, command: str) -> str:
    """The table of one run."""
    m = entry["machine"]
    lines = [
        "# Seams where the head layer ends",
        "",
        f"Command: `{command}`. Machine: {m.get('cpu_model')}, {m.get('threads')} threads, commit "
        f"{m.get('commit')}.",
        "",
        f"{entry['size']}² renders of {entry['frames']} training and {entry['frames']} held-out frames "
        "per clip (tracked features, not coded; the receiver's renderer with its references). Each cell: the "
        "render's mean step |ΔR| / the camera frame's |ΔG| between 4-neighbour pixels, 8-bit levels, mean "
        "over RGB: a render step above the frame's is an edge the frame does not have there. *seam*: pairs "
        "crossing the head layer's edge (opacity 0.5) into what the truth labels torso; *outline*: into the "
        "background; *interior*: inside the head layer (the render's blur, for scale); *box*: across the "
        "head box's screen outline with the head layer drawn there (a head cut by its box). *outside box*: "
        "the truth's head pixels whose rays miss the box.",
        "",
        "| clip | split | " + " | ".join(PAIR_SETS) + " | seam pairs | outside box |",
        "|---|---|" + "---|" * (len(PAIR_SETS) + 2),
    ]
    for c in entry["clips"]:
        for split in ("train", "held-out"):
            s = c[split]["steps"]
            cells = [f"{_cell(s[k]['render'])} / {_cell(s[k]['truth'])}" for k in PAIR_SETS]
            lines.append(
                f"| {c['clip']} | {split} | " + " | ".join(cells) + f" | {s['seam']['pairs']} | "
                f"{100 * c[split]['head_outside_box']:.2f}% |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--model", default="model_10min", help="each clip's MODEL directory name")
    ap.add_argument(
        "--clips", default="", help="comma-separated clip names (default: every clip under --work)"
    )
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=8, help="frames per split and clip")
    ap.add_argument("-o", "--output", type=Path, required=True, help="output stem (.json, .md)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [c for c in args.clips.split(",") if c]
    dirs = [args.work / c for c in names] if names else sorted(p.parent for p in args.work.glob("*/dataset"))
    missing = [d for d in dirs if not (d / args.model / "nerf.json").is_file()]
    if not dirs or missing:
        raise SystemExit(f"error: no {args.model} under {', '.join(map(str, missing or [args.work]))}")
    entry = {
        "benchmark": "seams where the head layer ends",
        "size": args.size,
        "frames": args.frames,
        "machine": machine_record(threads=1),
        "model": args.model,
        "clips": [clip_entry(d, args.model, args.size, args.frames) for d in dirs],
    }
    command = "python benchmarks/seam.py " + " ".join(sys.argv[1:])
    write_json_atomic(args.output.with_suffix(".json"), entry)
    write_bytes_atomic(args.output.with_suffix(".md"), markdown(entry, command).encode())


if __name__ == "__main__":
    main()
