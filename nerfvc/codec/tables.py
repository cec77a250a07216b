"""Codec tables: per-dimension steps, predictors and entropy-model scales fitted from training features.

The codec works on ``K = 6 + D`` dimensions per frame: the pose as a rotation vector relative to a reference
rotation (3) and a translation (3), then the D-d code vector. Everything the encoder and the decoder must
agree on bit-exactly (predictor coefficients) is stored as integers; the step-dependent constants are derived
with element-wise IEEE float64 operations only (see docs/bitstream.md). Fitting them is
:mod:`nerfvc.codec.fit`; :func:`load_model_tables` reads them (with the fingerprint) from a MODEL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.fsutil import read_json, write_json_atomic
from nerfvc.modeldir import read_model_manifest

TABLES_FORMAT = "nerfvc-codec"
# 2: mean-centred indices (c0 = 0); 3: W per lag (AR(2) option); 4: pose step cap; 5: the training poses'
# rotation error per frame step (frame_step_rotation_error); 6: the training features' coded bits per frame
# step and step index (rate_curve)
TABLES_VERSION = 6
READABLE_TABLES_VERSIONS = (2, 3, 4, 5, 6)  # version 2 is read as one lag; before 4 the pose is uncapped
MAX_LAGS = 2
CODEC_FILE = "codec.json"
POSE_DIM = 6  # rotation vector (3) + translation (3)
FRAC_BITS = 12  # fixed-point fraction bits of the integer predictors
COEF_LIMIT = 1 << 20  # |integer coefficient| bound (keeps the int64 sums exact)
Q_LIMIT = 1 << 24  # |quantization index| bound
# 2**(i/16) for i in 0..15, as exact literals so every platform derives the same step.
_FRAC16 = tuple(
    float.fromhex(h)
    for h in (
        "0x1.0000000000000p+0",
        "0x1.0b5586cf9890fp+0",
        "0x1.172b83c7d517bp+0",
        "0x1.2387a6e756238p+0",
        "0x1.306fe0a31b715p+0",
        "0x1.3dea64c123422p+0",
        "0x1.4bfdad5362a27p+0",
        "0x1.5ab07dd485429p+0",
        "0x1.6a09e667f3bcdp+0",
        "0x1.7a11473eb0187p+0",
        "0x1.8ace5422aa0dbp+0",
        "0x1.9c49182a3f090p+0",
        "0x1.ae89f995ad3adp+0",
        "0x1.c199bdd85529cp+0",
        "0x1.d5818dcfba487p+0",
        "0x1.ea4afa2a490dap+0",
    )
)
STEP_INDEX_MIN, STEP_INDEX_MAX = -128, 127


def step_from_index(k: int) -> float:
    """Quality multiplier ``Q = 2**(k/16)`` for a step index ``k`` in [-128, 127] (exact everywhere)."""
    if not STEP_INDEX_MIN <= k <= STEP_INDEX_MAX:
        raise ValueError(f"step index {k} out of range [{STEP_INDEX_MIN}, {STEP_INDEX_MAX}]")
    return math.ldexp(_FRAC16[k & 15], k >> 4)


def index_from_step(q: float) -> int:
    """Nearest step index for a quality multiplier ``q > 0`` (clamped to the valid range)."""
    if not (q > 0 and math.isfinite(q)):
        raise InputError(f"step must be a positive number, got {q}")
    return int(np.clip(round(16 * math.log2(q)), STEP_INDEX_MIN, STEP_INDEX_MAX))


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """Project 3×3 matrices ``(..., 3, 3)`` onto SO(3) (det +1) via SVD."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


@dataclass
class PredictorTables:
    """One linear predictor in the integer quantization domain (units of each dimension's step).

    ``mu_i = round_fix(c0_i / s_i) + sum_l sum_j W[l]_ij q_(t-1-l)_j + sum_{j<i} V_ij q_cur_j`` in
    ``2**-FRAC_BITS`` units, where ``s_i = base_step_i * Q``. The residual's Laplace scale (step units) is
    ``sqrt((sigma_i / s_i)**2 + gamma_i) / sqrt(2)``.
    """

    W: np.ndarray  # (P, K, K) int64, lag l+1 decoded frame → prediction (zero for keyframes)
    V: np.ndarray  # (K, K) int64, strictly lower: already decoded dims of this frame → prediction
    c0: np.ndarray  # (K,) float64, constant term in feature units
    sigma: np.ndarray  # (K,) float64, innovation scale (√2 × Laplace b) in feature units
    gamma: np.ndarray  # (K,) float64, variance (step units²) added by quantization noise in the inputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "W": self.W.tolist(),
            "V": self.V.tolist(),
            "c0": self.c0.tolist(),
            "sigma": self.sigma.tolist(),
            "gamma": self.gamma.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], k: int) -> PredictorTables:
        w = np.asarray(d["W"], dtype=np.int64)
        if w.ndim == 2:  # version 2: one lag
            w = w[None]
        if not 1 <= len(w) <= MAX_LAGS:
            raise ValueError(f"W must have 1 to {MAX_LAGS} lags")
        p = cls(
            W=w.reshape(len(w), k, k),
            V=np.asarray(d["V"], dtype=np.int64).reshape(k, k),
            c0=np.asarray(d["c0"], dtype=np.float64).reshape(k),
            sigma=np.asarray(d["sigma"], dtype=np.float64).reshape(k),
            gamma=np.asarray(d["gamma"], dtype=np.float64).reshape(k),
        )
        if np.any(np.triu(p.V) != 0):
            raise ValueError("V must be strictly lower triangular")
        if np.abs(p.W).max(initial=0) > COEF_LIMIT or np.abs(p.V).max(initial=0) > COEF_LIMIT:
            raise ValueError("predictor coefficient out of range")
        if not (np.all(np.isfinite(p.c0)) and np.all(p.sigma > 0) and np.all(p.gamma >= 0)):
            raise ValueError("bad c0/sigma/gamma")
        return p


@dataclass
class RateCurve:
    """Ideal payload bits per coded frame (no packet framing) of the training features, at the step indices
    ``step_indices (G,)``: ``key_bits (G,)`` for a keyframe, ``delta_bits (M, G)`` for a delta frame when
    every m-th frame is coded (m = 1…M, row m − 1). What a live sender, which has no clip to try, expects a
    step to cost (:func:`nerfvc.codec.encoder.expected_kbps`)."""

    step_indices: np.ndarray  # (G,) int, increasing
    key_bits: np.ndarray  # (G,)
    delta_bits: np.ndarray  # (M, G)

    @property
    def max_frame_step(self) -> int:
        """M: the largest frame step the curve knows."""
        return len(self.delta_bits)

    def bits(self, step_index: int, frame_step: int) -> tuple[float, float]:
        """``(key bits, delta bits)`` per coded frame at a step index (linear in the index between the grid
        points; below the finest one extended along the first segment, past the coarsest one flat)."""
        g = self.step_indices

        def at(y: np.ndarray) -> float:
            if step_index < g[0]:
                slope = (y[1] - y[0]) / (g[1] - g[0])
                return float(y[0] + slope * (step_index - g[0]))
            return float(np.interp(step_index, g, y))

        return at(self.key_bits), at(self.delta_bits[frame_step - 1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_indices": self.step_indices.tolist(),
            "key_bits": self.key_bits.tolist(),
            "delta_bits": self.delta_bits.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RateCurve:
        c = cls(
            np.asarray(d["step_indices"], dtype=np.int64),
            np.asarray(d["key_bits"], dtype=np.float64),
            np.asarray(d["delta_bits"], dtype=np.float64),
        )
        g = len(c.step_indices)
        if (
            g < 2
            or np.any(np.diff(c.step_indices) <= 0)
            or c.key_bits.shape != (g,)
            or c.delta_bits.ndim != 2
            or c.delta_bits.shape[1] != g
            or len(c.delta_bits) < 1
            or not (np.all(np.isfinite(c.key_bits)) and np.all(np.isfinite(c.delta_bits)))
            or np.any(c.key_bits < 0)
            or np.any(c.delta_bits < 0)
        ):
            raise ValueError("rate_curve must hold increasing step indices and non-negative bits for each")
        return c


@dataclass
class CodecTables:
    """Everything the codec needs besides the step: fitted on the training features of one person."""

    code_dim: int  # D
    mean: np.ndarray  # (K,) training mean of [rotvec, t, code]
    std: np.ndarray  # (K,) training std
    jitter: np.ndarray  # (K,) tracker frame-to-frame jitter estimate (robust, from 2nd differences)
    base_step: np.ndarray  # (K,) step at Q = 1
    ar: np.ndarray  # (K,) per-dim AR(1) coefficient (used for concealment)
    pose_ref: np.ndarray  # (3, 3) reference rotation R0: R = exp(rotvec) @ R0
    key: PredictorTables
    delta: PredictorTables
    predictor: str = "diag"  # how ``delta`` was fitted: "diag" (per-dim AR) or "full" (VAR(1))
    info: dict[str, Any] = field(default_factory=dict)
    version: int = TABLES_VERSION
    # (6,) the coarsest step each pose dim may take at any Q (inf: uncapped, as before version 4), so the rate
    # control coarsens the expression, never the head's placement, beyond the tracker's jitter
    pose_max_step: np.ndarray = field(default_factory=lambda: np.full(POSE_DIM, np.inf))
    # (M,) RMS head rotation error (degrees) of the training poses when only every m-th frame is kept and the
    # others interpolated as the decoder does, m = 1…M (index m − 1; empty before version 5: unknown), so a
    # live sender, which has no clip to look at, can keep the pose before the rate (encoder.live_rate)
    frame_step_rotation_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # the training features' coded bits per frame step and step index (None before version 6: the live rate
    # is then expected from the entropy model alone)
    rate_curve: RateCurve | None = None

    @property
    def dims(self) -> int:
        """K = 6 + D."""
        return POSE_DIM + self.code_dim

    # -- pose parameterization --------------------------------------------------------------------------
    def pose_to_vec(self, pose: np.ndarray) -> np.ndarray:
        """Poses ``(..., 12)`` → ``(..., 6)`` [rotation vector of R·R0ᵀ, t] (R projected onto SO(3))."""
        pose = np.asarray(pose, dtype=np.float64)
        r = nearest_rotation(pose[..., :9].reshape(*pose.shape[:-1], 3, 3))
        rel = r @ self.pose_ref.T
        rv = Rotation.from_matrix(rel.reshape(-1, 3, 3)).as_rotvec().reshape(*pose.shape[:-1], 3)
        return np.concatenate([rv, pose[..., 9:12]], axis=-1)

    def vec_to_pose(self, vec: np.ndarray) -> np.ndarray:
        """``(..., 6)`` → poses ``(..., 12)`` float64 with a proper rotation."""
        vec = np.asarray(vec, dtype=np.float64)
        rel = Rotation.from_rotvec(vec[..., :3].reshape(-1, 3)).as_matrix().reshape(*vec.shape[:-1], 3, 3)
        r = rel @ self.pose_ref
        return np.concatenate([r.reshape(*vec.shape[:-1], 9), vec[..., 3:6]], axis=-1)

    def features_to_vec(self, code: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """``code (..., D)``, ``pose (..., 12)`` → ``(..., K)`` float64."""
        code = np.asarray(code, dtype=np.float64)
        if code.shape[-1] != self.code_dim:
            raise ModelMismatchError(
                f"code has {code.shape[-1]} dims, the codec tables expect {self.code_dim}"
            )
        if np.asarray(pose).shape[-1] != 12:
            raise InputError(f"pose must be 12-d [R | t], got {np.asarray(pose).shape[-1]}")
        if not (np.all(np.isfinite(code)) and np.all(np.isfinite(pose))):
            raise InputError("features contain NaN or infinite values")
        return np.concatenate([self.pose_to_vec(pose), code], axis=-1)

    def vec_to_features(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(..., K)`` → ``code (..., D)`` float32, ``pose (..., 12)`` float32."""
        vec = np.asarray(vec, dtype=np.float64)
        return vec[..., POSE_DIM:].astype(np.float32), self.vec_to_pose(vec[..., :POSE_DIM]).astype(
            np.float32
        )

    # -- quantization -----------------------------------------------------------------------------------
    def steps(self, step_index: int) -> np.ndarray:
        """Per-dim steps ``(K,)`` for a step index: ``base_step · Q``, the pose dims at most
        ``pose_max_step`` (an exact IEEE minimum, so encoder and decoder agree bit for bit)."""
        s = self.base_step * step_from_index(step_index)
        s[:POSE_DIM] = np.minimum(s[:POSE_DIM], self.pose_max_step)
        return s

    def quantize(self, vec: np.ndarray, step_index: int) -> np.ndarray:
        """``(..., K)`` float → integer indices ``(..., K)`` int64 (clamped to ±Q_LIMIT).

        Indices count steps from the training mean, so a coarse step flattens a value towards the mean
        instead of moving it by up to half a step (which, for the head's depth, is centimetres).
        """
        q = np.rint((np.asarray(vec, dtype=np.float64) - self.mean) / self.steps(step_index))
        return np.clip(q, -Q_LIMIT, Q_LIMIT).astype(np.int64)

    def dequantize(self, q: np.ndarray, step_index: int) -> np.ndarray:
        """Integer indices ``(..., K)`` → feature vectors ``(..., K)`` float64."""
        return np.asarray(q, dtype=np.float64) * self.steps(step_index) + self.mean

    def reference(self, code: np.ndarray, pose: np.ndarray, step_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The bin centres of these features' indices: what an error-free decode with
        ``reconstruction="grid"`` returns, ``code (N,D)``, ``pose (N,12)`` (the default output moves each
        value within its bin: :func:`nerfvc.codec.coder.reference_stream`)."""
        q = self.quantize(self.features_to_vec(code, pose), step_index)
        return self.vec_to_features(self.dequantize(q, step_index))

    # -- (de)serialization ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLES_FORMAT,
            "version": self.version,
            "code_dim": self.code_dim,
            "pose_dim": POSE_DIM,
            "frac_bits": FRAC_BITS,
            "distribution": "laplace",
            "predictor": self.predictor,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "jitter": self.jitter.tolist(),
            "base_step": self.base_step.tolist(),
            "pose_max_step": [x if math.isfinite(x) else None for x in self.pose_max_step.tolist()],
            "frame_step_rotation_error": self.frame_step_rotation_error.tolist(),
            "rate_curve": None if self.rate_curve is None else self.rate_curve.to_dict(),
            "ar": self.ar.tolist(),
            "pose_ref": self.pose_ref.reshape(9).tolist(),
            "key": self.key.to_dict(),
            "delta": self.delta.to_dict(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecTables:
        if not isinstance(d, dict) or d.get("format") != TABLES_FORMAT:
            raise InputError("not nerfvc codec tables (format != 'nerfvc-codec')")
        if d.get("version") not in READABLE_TABLES_VERSIONS:
            raise ModelMismatchError(
                f"codec tables version {d.get('version')} is not supported (this build reads versions "
                f"{', '.join(map(str, READABLE_TABLES_VERSIONS))}); run `nerfvc codec-fit` to refit them"
            )
        try:
            if d["pose_dim"] != POSE_DIM or d["frac_bits"] != FRAC_BITS or d["distribution"] != "laplace":
                raise ValueError("unsupported pose_dim/frac_bits/distribution")
            dcode = int(d["code_dim"])
            k = POSE_DIM + dcode

            def vec(name: str) -> np.ndarray:
                a = np.asarray(d[name], dtype=np.float64)
                if a.shape != (k,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"{name} must be {k} finite numbers")
                return a

            cap = d.get("pose_max_step") if int(d["version"]) >= 4 else None
            cap = (
                np.full(POSE_DIM, np.inf)
                if cap is None
                else np.asarray([np.inf if x is None else x for x in cap], dtype=np.float64)
            )
            if cap.shape != (POSE_DIM,) or np.any(np.isnan(cap)) or np.any(cap <= 0):
                raise ValueError(f"pose_max_step must be {POSE_DIM} positive numbers or null")
            step_error = np.asarray(
                d.get("frame_step_rotation_error", []) if int(d["version"]) >= 5 else [], dtype=np.float64
            )
            if step_error.ndim != 1 or not np.all(np.isfinite(step_error)) or np.any(step_error < 0):
                raise ValueError("frame_step_rotation_error must be non-negative numbers")
            curve = d.get("rate_curve") if int(d["version"]) >= 6 else None
            t = cls(
                code_dim=dcode,
                mean=vec("mean"),
                std=vec("std"),
                jitter=vec("jitter"),
                base_step=vec("base_step"),
                ar=vec("ar"),
                pose_ref=np.asarray(d["pose_ref"], dtype=np.float64).reshape(3, 3),
                key=PredictorTables.from_dict(d["key"], k),
                delta=PredictorTables.from_dict(d["delta"], k),
                predictor=str(d.get("predictor", "diag")),
                info=dict(d.get("info", {})),
                version=TABLES_VERSION,
                pose_max_step=cap,
                frame_step_rotation_error=step_error,
                rate_curve=None if curve is None else RateCurve.from_dict(curve),
            )
            if not np.all(t.base_step > 0):
                raise ValueError("base_step must be positive")
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"codec tables are malformed ({e})") from e
        return t

    def save(self, path: str | Path) -> None:
        """Write the tables as JSON (atomically)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CodecTables:
        """Read tables from a JSON file or from ``codec.json`` in a MODEL directory."""
        path = Path(path)
        if path.is_dir():
            path = path / CODEC_FILE
        if not path.exists():
            raise InputError(f"{path}: codec tables not found (was the model trained with codec tables?)")
        try:
            return cls.from_dict(read_json(path))
        except InputError as e:
            raise InputError(f"{path}: {e}") from e


def load_model_tables(model: str | Path) -> tuple[CodecTables, str]:
    """``(codec tables, fingerprint)`` of a MODEL directory whose files are verified against ``model.json``:
    what the encoder and the decoder of every pipeline (CLI, eval, live call) are built from."""
    manifest = read_model_manifest(model, verify=True)
    if CODEC_FILE not in manifest["files"]:
        raise InputError(f"{model}: model has no {CODEC_FILE} (run `nerfvc codec-fit` or retrain)")
    return CodecTables.load(Path(model) / CODEC_FILE), manifest["fingerprint"]
