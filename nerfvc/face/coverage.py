"""Enrollment coverage: how much of the expression and head-pose space a clip's training frames show, and
what is missing, in plain words.

A per-person NeRF can only draw what its enrollment video showed. Expression is measured by action-unit
proxies from the face-mesh landmarks (mouth opening, mouth width, eye opening, brow raise, each over the
inter-ocular distance), head pose by its angles from the clip's mean pose. For each the training split's
spread (5th-95th percentile) is compared with :data:`TYPICAL`, the spread measured on talking-head clips
(``benchmarks/coverage.py`` over the shared development clips); the test split is scored by the share of
its frames outside the training range (a crude "will the model have seen this?" for held-out frames).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# mediapipe face-mesh indices: inner lips, mouth corners, upper/lower lids, brows, outer eye corners
_EYE_OUTER = (33, 263)
_PROXY_POINTS = {
    "mouth_open": (13, 14),
    "mouth_width": (61, 291),
    "left_eye_open": (159, 145),
    "right_eye_open": (386, 374),
    "left_brow_raise": (105, 159),
    "right_brow_raise": (334, 386),
}
ANGLES = ("pitch", "yaw", "roll")
# Spread (5th-95th percentile) a talking person typically shows: the median over the shared development clips
# (benchmarks/coverage.py, benchmarks/results/coverage.json, measured 2026-12-01). Proxies in inter-ocular
# distances, angles in degrees.
TYPICAL = {
    "mouth_open": 0.154,
    "mouth_width": 0.142,
    "left_eye_open": 0.044,
    "right_eye_open": 0.042,
    "left_brow_raise": 0.091,
    "right_brow_raise": 0.086,
    "pitch": 10.2,
    "yaw": 12.4,
    "roll": 12.6,
}
ENOUGH = 0.5  # a spread below half the typical one is reported as missing
ADVICE = {
    "mouth_open": "no wide-open mouth (say long vowels: 'aah', 'oh')",
    "mouth_width": "no broad smile or pursed lips",
    "left_eye_open": "no blinks or wide eyes",
    "right_eye_open": "no blinks or wide eyes",
    "left_brow_raise": "no raised or frowning brows",
    "right_brow_raise": "no raised or frowning brows",
    "pitch": "no nods (look up and down)",
    "yaw": "no head turns (look left and right)",
    "roll": "no head tilts (tilt towards each shoulder)",
}


def expression_proxies(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Face-mesh landmarks (N,478,3) in pixels → action-unit proxies, each (N,), in inter-ocular distances."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    iod = np.linalg.norm(lm[:, _EYE_OUTER[0]] - lm[:, _EYE_OUTER[1]], axis=-1).clip(min=1e-6)  # (N,)
    return {k: np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) / iod for k, (a, b) in _PROXY_POINTS.items()}


def pose_angles(pose: np.ndarray) -> np.ndarray:
    """Poses (N,12) → pitch, yaw, roll (N,3) in degrees from the clip's mean head rotation."""
    rot = Rotation.from_matrix(np.asarray(pose, np.float64)[:, :9].reshape(-1, 3, 3))
    return (rot.mean().inv() * rot).as_euler("xyz", degrees=True)


def measures(landmarks: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
    """Every coverage measure per frame: the expression proxies and the pose angles, each (N,)."""
    angles = pose_angles(pose)
    return {**expression_proxies(landmarks), **{a: angles[:, i] for i, a in enumerate(ANGLES)}}


def coverage(landmarks: np.ndarray, pose: np.ndarray, n_train: int, valid: np.ndarray | None = None) -> dict:
    """Coverage of a clip whose first ``n_train`` frames train: per measure the training spread, its ratio to
    :data:`TYPICAL`, the test frames outside the training range; ``missing`` lists the plain-words advice."""
    m = measures(landmarks, pose)
    ok = np.ones(len(pose), bool) if valid is None else np.asarray(valid, bool)
    idx = np.flatnonzero(ok)
    train, test = idx[idx < n_train], idx[idx >= n_train]
    rows: dict[str, dict] = {}
    outside_any = np.zeros(len(test), bool)
    for name, v in m.items():
        lo, hi = np.percentile(v[train], [5, 95]) if len(train) else (np.nan, np.nan)
        tmin, tmax = (v[train].min(), v[train].max()) if len(train) else (np.nan, np.nan)
        out = (v[test] < tmin) | (v[test] > tmax)
        outside_any |= out
        rows[name] = {
            "spread": float(hi - lo),
            "of_typical": float((hi - lo) / TYPICAL[name]),
            "test_outside": float(out.mean()) if len(test) else None,
        }
    missing = sorted({ADVICE[k] for k, r in rows.items() if not r["of_typical"] >= ENOUGH})
    return {
        "measures": rows,
        "missing": missing,
        "test_frames_outside": float(outside_any.mean()) if len(test) else None,
        "train_frames": len(train),
        "test_frames": len(test),
    }


def summary_lines(cov: dict) -> list[str]:
    """The coverage in a few plain lines (what ``nerfvc prepare`` prints and ``nerfvc inspect`` shows)."""
    pct = {k: f"{100 * r['of_typical']:.0f}%" for k, r in cov["measures"].items()}
    lines = [
        "expression coverage vs a typical talking person: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in pct.items() if k not in ANGLES),
        "head pose coverage: " + ", ".join(f"{a} {pct[a]}" for a in ANGLES),
    ]
    if cov["test_frames_outside"] is not None:
        lines.append(f"test frames outside the training range: {100 * cov['test_frames_outside']:.0f}%")
    lines += [f"missing: {m}" for m in cov["missing"]]
    return lines
