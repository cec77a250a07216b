"""Rate-distortion of the feature codec measured in RENDERED quality → benchmarks/results/rate_render.json.

For each (model, dataset) pair: fit codec tables on the dataset's train split (as ``nerfvc train`` does)
for each variant of the table fit, code the test split at each target rate (single-frame packets, as a live
call sends them), decode, render every decoded frame at ``--size`` and score it against the ground-truth
frame: PSNR, LPIPS, head rotation error (deg, RMS over frames) and the real rate (whole stream). The
unquantized features' render and the frozen first test frame are the two references.

Variants: ``cap=C`` caps the pose steps at C × their Q = 1 size (``fit_codec(pose_cap=C)``), ``cap=none``
lets them grow with Q like the expression's (tables before version 4); ``--frame-steps`` codes every m-th
frame (the decoder interpolates the others), ``auto`` lets the rate control choose m (``choose_rate``).

    PYTHONPATH=. .venv/bin/python benchmarks/rate_render.py \\
        --pair work/train_speed/auto_10_min:/work/data/datasets/german \\
        --kbps 0.7,1,1.5,2 --caps none,4 --frame-steps 1,2,3,auto
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import heldout_ground_truth, pixel_scores, render_frames

from nerfvc.codec import decode_stream, encode_stream, fit_codec
from nerfvc.codec.framing import HEADER_SIZE, StreamHeader
from nerfvc.codec.tables import step_from_index
from nerfvc.datasetdir import dataset_split, read_features, read_manifest
from nerfvc.face.model import load_face_model
from nerfvc.features import model_inputs, rotation_angle_deg
from nerfvc.record import machine_record
from nerfvc.render.renderer import Renderer

ROOT = Path(__file__).resolve().parents[1]


def run_pair(
    model: Path,
    dataset: Path,
    targets: list[float],
    caps: list[float | None],
    frame_steps: list[int | None],
    size: int,
    fps: float,
) -> dict:
    manifest = read_manifest(dataset)
    (a, b), (c, d) = dataset_split(manifest)
    feats = read_features(dataset, manifest)
    code, pose = model_inputs(feats, model), feats["pose"]
    valid = feats.get("valid")
    face = load_face_model(model)
    gt = heldout_ground_truth(dataset, size)
    renderer = Renderer.from_model_dir(model)
    test_code, test_pose = code[c:d], pose[c:d]
    frozen = np.broadcast_to(gt[0], gt[1:].shape)  # the first test frame, held over the others
    result = {
        "model": str(model),
        "dataset": str(dataset),
        "test_frames": int(d - c),
        "unquantized": pixel_scores(render_frames(renderer, test_code, test_pose, size), gt),
        "frozen_first_frame": pixel_scores(frozen, gt[1:]),
        "points": [],
    }
    for cap in caps:
        tables = fit_codec(
            code[a:b], pose[a:b], None if valid is None else valid[a:b], face_model=face, pose_cap=cap
        )
        for target, m in itertools.product(targets, frame_steps):
            data = encode_stream(
                tables,
                "0" * 16,
                test_code,
                test_pose,
                fps=fps,
                kbps=target,
                frames_per_packet=1,
                frame_step=m,
            )
            code_hat, pose_hat, _ = decode_stream(data, tables, "0" * 16)  # interpolated to every frame
            k = int.from_bytes(data[HEADER_SIZE + 5 : HEADER_SIZE + 6], "big", signed=True)
            rot = rotation_angle_deg(test_pose, pose_hat)
            point = {
                "cap": cap,
                "frame_step": StreamHeader.from_bytes(data[:HEADER_SIZE]).frame_step,
                "frame_step_choice": "auto" if m is None else m,
                "target_kbps": target,
                "kbps": len(data) * 8 / len(test_code) * fps / 1000,
                "step": step_from_index(k),
                "rotation_rms_deg": float(np.sqrt(np.mean(rot**2))),
                **pixel_scores(render_frames(renderer, code_hat, pose_hat, size), gt),
            }
            result["points"].append(point)
            print(json.dumps(point), flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", action="append", required=True, help="MODEL:DATASET (repeatable)")
    ap.add_argument("--kbps", default="0.8,1,1.5,2")
    ap.add_argument("--caps", default="none,2,4,8", help="pose step caps (× the Q = 1 step); none = uncapped")
    ap.add_argument("--frame-steps", default="1,auto", help="code every m-th frame (comma list of m or auto)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "rate_render.json")
    args = ap.parse_args()
    targets = [float(x) for x in args.kbps.split(",")]
    frame_steps = [None if x == "auto" else int(x) for x in args.frame_steps.split(",")]
    caps = [None if x == "none" else float(x) for x in args.caps.split(",")]
    t0 = time.time()
    pairs = []
    for pair in args.pair:
        model, dataset = pair.split(":")
        print(f"== {model}", flush=True)
        pairs.append(run_pair(Path(model), Path(dataset), targets, caps, frame_steps, args.size, args.fps))
    out = {
        "machine": machine_record(),
        "size": args.size,
        "fps": args.fps,
        "frames_per_packet": 1,
        "seconds": round(time.time() - t0, 1),
        "pairs": pairs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
