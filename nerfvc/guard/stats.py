"""The guard's statistics: how far a frame's features lie from what the model was trained on.

A per-person NeRF draws well what its training frames showed and badly what they did not. The sender holds
the model, so for every frame it measures the distance of the frame's features from the training features:

- **expression**: the expression coefficients weighted into RMS landmark displacement (metres, through the
  face model's basis, as the codec's steps are; per-dim training std without a face model);
- **torso**: the torso shift (fractions of the frame), when the model takes one;
- **rotation**: the head rotation relative to the training mean (rotation vector, degrees);
- **position**: the head's image-plane position ``t_xy / t_z`` and scale ``log t_z``;
- **angles**: how many degrees pitch / yaw / roll lie outside the training range (summed).

Each distance is to the *nearest* training frame (a stored sample of at most :data:`MAX_SAMPLE` frames), in
units of that group's own spread of novelty: ``scale_g`` is the 90th percentile, over the training frames, of
the distance to the nearest training frame at least one second away (a held-out frame of the enrollment
itself). ``joint`` is the nearest distance with all groups together (RMS of the normalized group distances),
so an expression seen only at another head pose still counts as novel. :meth:`GuardStats.score` is the
guard score (see docs/guard.md for the calibration that chose it).

Files in a MODEL directory: ``guard.safetensors`` (the sample and the normalization) and ``guard.json``
(version, groups, scales, angle ranges, threshold); both are in the model's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.fsutil import atomic_path, read_json, write_json_atomic

GUARD_FORMAT = "nerfvc-guard"
GUARD_VERSION = 1
GUARD_FILE = "guard.safetensors"
GUARD_JSON = "guard.json"
MAX_SAMPLE = 2000  # training frames kept for the nearest-neighbour search
WINDOW_S = 1.0  # a training frame's own novelty is measured against frames at least this far away
SCALE_PERCENTILE = 90.0
GROUPS = ("expression", "torso", "rotation", "position")
# Smallest scale per group (a training set that never moves in a group must not turn sensor noise into
# novelty): 0.1 mm of landmark motion, 0.2% of the frame, 0.5 degrees, 0.2% of the frame / of the depth.
MIN_SCALE = {"expression": 1e-4, "torso": 2e-3, "rotation": 0.5, "position": 2e-3}
# The guard score and its default threshold, chosen by benchmarks/guard.py on the 8 shared clips
# (docs/guard.md): scores above it predict a render worse than a frozen frame.
DEFAULT_THRESHOLD = 2.0


def _rotvec_deg(pose: np.ndarray, r0: np.ndarray) -> np.ndarray:
    rot = Rotation.from_matrix(np.asarray(pose, np.float64)[:, :9].reshape(-1, 3, 3))
    return (rot * Rotation.from_matrix(r0).inv()).as_rotvec(degrees=True)


def _angles_deg(pose: np.ndarray, r0: np.ndarray) -> np.ndarray:
    rot = Rotation.from_matrix(np.asarray(pose, np.float64)[:, :9].reshape(-1, 3, 3))
    return (Rotation.from_matrix(r0).inv() * rot).as_euler("xyz", degrees=True)


def _position(pose: np.ndarray) -> np.ndarray:
    t = np.asarray(pose, np.float64)[:, 9:12]
    z = np.maximum(t[:, 2:3], 1e-6)
    return np.concatenate([t[:, :2] / z, np.log(z)], axis=1)


def _nearest(query: np.ndarray, ref: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Per query row (N,K) the Euclidean distance to the nearest row of ``ref`` (M,K)."""
    out = np.empty(len(query))
    rr = (ref**2).sum(1)
    for i in range(0, len(query), chunk):
        q = query[i : i + chunk]
        d2 = (q**2).sum(1)[:, None] + rr[None] - 2 * q @ ref.T
        out[i : i + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


@dataclass
class GuardStats:
    """What the guard knows about a model's training features (see the module docstring)."""

    expression_dim: int  # E (the torso shift follows in the model input)
    torso_dim: int  # 0, 2 or 4
    expr_weight: np.ndarray  # (E,) metres of RMS landmark displacement per unit (or 1/std)
    r0: np.ndarray  # (3, 3) training mean head rotation
    sample: dict[str, np.ndarray]  # group → (M, k) training features of the sampled frames
    scale: dict[str, float]  # group → the 90th-percentile held-out nearest distance of training frames
    angle_range: np.ndarray  # (3, 2) pitch/yaw/roll min, max over the training frames (degrees)
    threshold: float = DEFAULT_THRESHOLD
    info: dict[str, Any] = field(default_factory=dict)

    # -- features ----------------------------------------------------------------------------------------
    def groups(self, model_input: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs (N, E+T) and poses (N,12) → the guard's feature groups, each (N, k)."""
        x = np.asarray(model_input, np.float64).reshape(len(pose), -1)
        if x.shape[1] != self.expression_dim + self.torso_dim:
            raise InputError(
                f"guard: features have {x.shape[1]} values, the model takes "
                f"{self.expression_dim + self.torso_dim}"
            )
        pose = np.asarray(pose, np.float64).reshape(-1, 12)
        out = {
            "expression": x[:, : self.expression_dim] * self.expr_weight,
            "rotation": _rotvec_deg(pose, self.r0),
            "position": _position(pose),
        }
        if self.torso_dim:
            out["torso"] = x[:, self.expression_dim :]
        return out

    def components(self, model_input: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
        """Per frame (N,) the normalized nearest-training-frame distance of each group, ``joint`` (all
        groups together) and ``angles`` (degrees outside the training range, summed over the 3 angles)."""
        g = self.groups(model_input, pose)
        names = [k for k in GROUPS if k in g]
        out = {k: _nearest(g[k], self.sample[k]) / self.scale[k] for k in names}
        q = np.concatenate([g[k] / self.scale[k] for k in names], axis=1)
        s = np.concatenate([self.sample[k] / self.scale[k] for k in names], axis=1)
        out["joint"] = _nearest(q, s)
        a = _angles_deg(np.asarray(pose, np.float64).reshape(-1, 12), self.r0)
        lo, hi = self.angle_range[:, 0], self.angle_range[:, 1]
        out["angles"] = (np.maximum(a - hi, 0) + np.maximum(lo - a, 0)).sum(1)
        return out

    def score(self, model_input: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """The guard score per frame (N,): the largest normalized nearest-training-frame distance over the
        feature groups (1 ≈ as novel as the most novel 10% of the enrollment's own frames)."""
        c = self.components(model_input, pose)
        return np.max([c[k] for k in GROUPS if k in c], axis=0)

    def fires(self, model_input: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Per frame (N,) bool: the score is above the threshold (the render is likely worse than a frozen
        frame)."""
        return self.score(model_input, pose) > self.threshold

    # -- fit -----------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        model_input: np.ndarray,
        pose: np.ndarray,
        *,
        expression_dim: int,
        fps: float = 25.0,
        valid: np.ndarray | None = None,
        face_basis: np.ndarray | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        seed: int = 0,
    ) -> GuardStats:
        """Fit on the training frames' model inputs (N, E+T) and poses (N,12). ``face_basis`` (3L, E): the
        face model's expression basis (weights the expression into landmark displacement)."""
        x = np.asarray(model_input, np.float64)
        pose = np.asarray(pose, np.float64)
        if x.ndim != 2 or pose.shape != (len(x), 12) or x.shape[1] < expression_dim:
            raise InputError(
                f"guard fit: expected inputs (N,E+T) and poses (N,12), got {x.shape}, {pose.shape}"
            )
        ok = np.ones(len(x), bool) if valid is None else np.asarray(valid, bool)
        ok &= np.isfinite(x).all(1) & np.isfinite(pose).all(1)
        times = np.flatnonzero(ok)
        if len(times) < 4:
            raise InputError(f"guard fit: {len(times)} usable training frames (need at least 4)")
        x, pose = x[times], pose[times]
        torso_dim = x.shape[1] - expression_dim
        if torso_dim not in (0, 2, 4):
            raise InputError(f"guard fit: {torso_dim} values after the expression (expected 0, 2 or 4)")
        if face_basis is not None and face_basis.shape[1] >= expression_dim:
            L = face_basis.shape[0] // 3
            w = np.linalg.norm(face_basis[:, :expression_dim], axis=0) / np.sqrt(L)
        else:
            w = 1 / np.maximum(x[:, :expression_dim].std(0), 1e-9)
        r0 = Rotation.from_matrix(pose[:, :9].reshape(-1, 3, 3)).mean().as_matrix()
        st = cls(expression_dim, torso_dim, w, r0, {}, {}, np.zeros((3, 2)), threshold)
        g = st.groups(x, pose)
        if len(x) > MAX_SAMPLE:
            pick = np.sort(np.random.default_rng(seed).choice(len(x), MAX_SAMPLE, replace=False))
        else:
            pick = np.arange(len(x))
        st.sample = {k: v[pick].astype(np.float32).astype(np.float64) for k, v in g.items()}
        # held-out novelty of the training frames: nearest sampled frame at least WINDOW_S away
        window = max(1, round(WINDOW_S * fps))
        probe = pick[:: max(1, len(pick) // 500)]
        far = np.abs(times[probe][:, None] - times[pick][None]) >= window  # (P, M)
        for k, v in g.items():
            s = st.sample[k]
            d = np.sqrt(np.maximum(((v[probe][:, None] - s[None]) ** 2).sum(-1), 0))
            d = np.where(far, d, np.inf).min(1)
            d = d[np.isfinite(d)]
            st.scale[k] = float(max(np.percentile(d, SCALE_PERCENTILE) if len(d) else 0.0, MIN_SCALE[k]))
        a = _angles_deg(pose, r0)
        st.angle_range = np.stack([a.min(0), a.max(0)], axis=1)
        st.info = {"train_frames": len(x), "sample_frames": len(pick), "window_frames": window}
        return st

    # -- files ---------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``guard.safetensors`` and ``guard.json`` into ``directory`` (atomically each)."""
        from safetensors.numpy import save_file

        d = Path(directory)
        tensors = {f"sample.{k}": np.ascontiguousarray(v, np.float32) for k, v in self.sample.items()}
        tensors["expr_weight"] = np.ascontiguousarray(self.expr_weight, np.float64)
        tensors["r0"] = np.ascontiguousarray(self.r0, np.float64)
        tensors["angle_range"] = np.ascontiguousarray(self.angle_range, np.float64)
        with atomic_path(d / GUARD_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(
            d / GUARD_JSON,
            {
                "format": GUARD_FORMAT,
                "version": GUARD_VERSION,
                "expression_dim": self.expression_dim,
                "torso_dim": self.torso_dim,
                "scale": self.scale,
                "threshold": self.threshold,
                "info": self.info,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> GuardStats:
        """Read a MODEL directory's guard statistics; :class:`InputError` if it has none (run
        ``nerfvc guard-fit``) or they are malformed."""
        d = Path(directory)
        if not (d / GUARD_JSON).is_file() or not (d / GUARD_FILE).is_file():
            raise InputError(f"{d}: the model has no guard statistics (run: nerfvc guard-fit {d} DATASET)")
        meta = read_json(d / GUARD_JSON)
        if not isinstance(meta, dict) or meta.get("format") != GUARD_FORMAT:
            raise InputError(f"{d / GUARD_JSON}: not nerfvc guard statistics")
        if meta.get("version") != GUARD_VERSION:
            raise ModelMismatchError(
                f"{d / GUARD_JSON}: guard version {meta.get('version')!r} is not supported"
            )
        from safetensors.numpy import load_file

        try:
            t = load_file(str(d / GUARD_FILE))
            scale = {str(k): float(v) for k, v in meta["scale"].items()}
            e, td = int(meta["expression_dim"]), int(meta["torso_dim"])
            sample = {k: t[f"sample.{k}"].astype(np.float64) for k in scale}
            st = cls(
                e,
                td,
                t["expr_weight"],
                t["r0"],
                sample,
                scale,
                t["angle_range"],
                float(meta["threshold"]),
                dict(meta.get("info") or {}),
            )
        except Exception as ex:
            raise InputError(f"{d}: malformed guard statistics ({type(ex).__name__}: {ex})") from ex
        if st.expr_weight.shape != (e,) or st.r0.shape != (3, 3) or st.angle_range.shape != (3, 2):
            raise InputError(f"{d}: malformed guard statistics (array shapes)")
        if not all(v > 0 and np.isfinite(v) for v in scale.values()) or not np.isfinite(st.threshold):
            raise InputError(f"{d}: malformed guard statistics (scales, threshold)")
        return st


def has_guard(directory: str | Path) -> bool:
    """Whether a MODEL directory holds guard statistics."""
    d = Path(directory)
    return (d / GUARD_JSON).is_file() and (d / GUARD_FILE).is_file()
