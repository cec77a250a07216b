"""Sender tracking benchmark → benchmarks/results/tracking.json.

Measures, on one CPU core (process pinned, torch/cv2 single-threaded):
- tracking fps (mediapipe face mesh + morphable-model projection + smoothing) at 256² and 512²;
- the one-euro smoother's effect: jitter (RMS second difference per frame) and lag (time shift that best
  aligns the smoothed signal with the raw one) of rotation, translation and expression.

Usage: PYTHONPATH=. python benchmarks/tracking.py [--video CLIP] [--frames 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT / "../shared/data/clips/mimictalk_german_anchor_20s.mp4"


def _single_core() -> None:
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def jitter(x: np.ndarray) -> float:
    """RMS over time of the per-frame second difference ``(N, D)`` → scalar (units of ``x``)."""
    d2 = x[2:] - 2 * x[1:-1] + x[:-2]
    return float(np.sqrt((d2**2).sum(-1).mean()))


def lag_frames(raw: np.ndarray, smooth: np.ndarray, max_lag: float = 5.0) -> float:
    """Shift τ (frames, 0.1 steps) minimising RMS(smooth[t] − raw[t − τ]) (linear interpolation in time)."""
    n = len(raw)
    idx = np.arange(n, dtype=np.float64)
    best, best_err = 0.0, np.inf
    for tau in np.arange(0.0, max_lag + 1e-9, 0.1):
        shifted = np.stack([np.interp(idx - tau, idx, raw[:, k]) for k in range(raw.shape[1])], 1)
        sl = slice(int(np.ceil(max_lag)) + 1, n)
        err = float(np.sqrt(((smooth[sl] - shifted[sl]) ** 2).mean()))
        if err < best_err:
            best, best_err = float(tau), err
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/tracking.json"))
    args = ap.parse_args()
    _single_core()

    from nerfvc.camera import Camera
    from nerfvc.face.mesh import FaceMesh
    from nerfvc.face.model import DEFAULT_FOV_DEG, FaceModel
    from nerfvc.face.smoothing import FeatureSmoother, SmoothingParams
    from nerfvc.face.tracker import FaceTracker
    from nerfvc.io.video import read_frames

    frames, times = [], []
    for f, t in read_frames(args.video, max_frames=args.frames):
        frames.append(f)
        times.append(t)
    times = np.array(times)
    h, w = frames[0].shape[:2]
    side = min(h, w)
    frames = [f[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2] for f in frames]

    # the person's model from the first 80% of the frames at 512²
    cam512 = Camera.from_fov(512, 512, DEFAULT_FOV_DEG)
    mesh = FaceMesh(max_num_faces=1)
    f512 = [cv2.resize(f, (512, 512), interpolation=cv2.INTER_AREA) for f in frames]
    lms = np.array([mesh.detect(f)[0] for f in f512])
    mesh.close()
    model = FaceModel.build(lms[: int(0.8 * len(lms))], cam512, 79)

    result: dict = {
        "video": Path(args.video).name,
        "frames": len(frames),
        "machine": machine_record(1),
        "speed": {},
    }
    raw_feats = None
    for size in (256, 512):
        fs = f512
        if size != 512:
            fs = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in f512]
        for smoothing in (False, True):
            tr = FaceTracker(model, cam512, smoothing=smoothing)
            tr.track(fs[0], times[0])  # warm-up (first detection)
            tr.reset()
            t_mesh = t_fit = 0.0
            feats = []
            t0 = time.perf_counter()
            for f, t in zip(fs, times):
                a = time.perf_counter()
                lm = tr._mesh.detect(f)
                b = time.perf_counter()
                feats.append(tr.features(lm[0], (size, size), t))
                t_fit += time.perf_counter() - b
                t_mesh += b - a
            total = time.perf_counter() - t0
            tr.close()
            key = f"{size}_{'smooth' if smoothing else 'raw'}"
            result["speed"][key] = {
                "fps": len(fs) / total,
                "ms_per_frame": 1000 * total / len(fs),
                "ms_face_mesh": 1000 * t_mesh / len(fs),
                "ms_project_and_smooth": 1000 * t_fit / len(fs),
            }
            if size == 512 and not smoothing:
                raw_feats = feats
            print(key, json.dumps(result["speed"][key]))

    # smoothing effect, offline on the raw 512² features (same smoother code as the tracker)
    expr = np.array([f.expression for f in raw_feats], np.float64)
    pose = np.array([f.pose for f in raw_feats], np.float64)

    def groups(e: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
        r = p[:, :9].reshape(-1, 3, 3)
        # small-angle rotation vector relative to the first frame, degrees
        rel = np.einsum("nij,kj->nik", r, r[0])
        rv = np.stack(
            [rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0], rel[:, 1, 0] - rel[:, 0, 1]], axis=1
        )
        # expression as the RMS landmark displacement it causes, in mm (orthonormal basis)
        return {
            "rotation_deg": np.degrees(rv / 2),
            "translation_mm": p[:, 9:] * 1000,
            "expression_mm": e * 1000 / np.sqrt(478),
        }

    raw_g = groups(expr, pose)
    settings = {
        "default": SmoothingParams(),
        "strong": SmoothingParams(0.5, 3.0, 0.5, 0.3, 0.5, 0.3),
        "light": SmoothingParams(3.0, 30.0, 3.0, 3.0, 3.0, 3.0),
    }
    result["smoothing"] = {}
    for name, params in settings.items():
        sm = FeatureSmoother(params)
        out = [sm(e, p, t) for e, p, t in zip(expr, pose, times)]
        g = groups(np.array([o[0] for o in out]), np.array([o[1] for o in out]))
        result["smoothing"][name] = {"params": params.__dict__} | {
            k: {
                "jitter_raw": jitter(raw_g[k]),
                "jitter_smoothed": jitter(g[k]),
                "jitter_reduction": 1 - jitter(g[k]) / max(jitter(raw_g[k]), 1e-12),
                "lag_frames": lag_frames(raw_g[k], g[k]),
                "lag_ms": 1000 * lag_frames(raw_g[k], g[k]) * float(np.median(np.diff(times))),
            }
            for k in raw_g
        }
        print(name, json.dumps(result["smoothing"][name], indent=None))
    result["command"] = "PYTHONPATH=. python benchmarks/tracking.py"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
