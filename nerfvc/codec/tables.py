"""Codec tables: per-dimension steps, predictors and entropy-model scales fitted from training features.

The codec works on ``K = 6 + D`` dimensions per frame: the pose as a rotation vector relative to a reference
rotation (3) and a translation (3), then the D-d code vector. Everything the encoder and the decoder must
agree on bit-exactly (predictor coefficients) is stored as integers; the step-dependent constants are derived
with element-wise IEEE float64 operations only (see docs/bitstream.md).
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

TABLES_FORMAT = "nerfvc-codec"
TABLES_VERSION = 3  # 2: predictors for mean-centred indices (c0 = 0); 3: W per lag (AR(2) option)
READABLE_TABLES_VERSIONS = (2, 3)  # a version-2 file is read as one lag
MAX_LAGS = 2
CODEC_FILE = "codec.json"
POSE_DIM = 6  # rotation vector (3) + translation (3)
FRAC_BITS = 12  # fixed-point fraction bits of the integer predictors
COEF_LIMIT = 1 << 20  # |integer coefficient| bound (keeps the int64 sums exact)
Q_LIMIT = 1 << 24  # |quantization index| bound
# base step / tracker jitter, both in landmark space. 0.3: at Q = 1 the landmark error is 0.6-1.1× the
# tracker's jitter on the three development datasets (see docs/bitstream.md).
LANDMARK_STEP_FACTOR = 0.3

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
        """Per-dim steps ``(K,)`` for a step index."""
        return self.base_step * step_from_index(step_index)

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
        """What an error-free decode must return for these features: ``code (N,D)``, ``pose (N,12)``."""
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


# -- fitting -----------------------------------------------------------------------------------------------
def _jitter(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Robust per-dim frame-to-frame noise: MAD of second differences / sqrt(6) (white-noise model)."""
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    if ok.sum() < 3:
        return np.zeros(x.shape[1])
    d2 = (x[2:] - 2 * x[1:-1] + x[:-2])[ok]
    mad = np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0) * 1.4826
    return mad / np.sqrt(6.0)


def _ldl_predictor(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For covariance ``cov (K,K)``: strictly lower ``B`` with E[e_i | e_<i] = B e, and conditional stds."""
    k = len(cov)
    reg = cov + np.eye(k) * (1e-9 * max(np.trace(cov) / max(k, 1), 1e-30))
    lc = np.linalg.cholesky(reg)
    dg = np.diag(lc).copy()
    unit = lc / dg[None, :]
    b = np.eye(k) - np.linalg.inv(unit)
    return np.tril(b, -1), dg


def _integerize(coef: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Feature-domain coefficients ``coef[i, j]`` → integer q-domain ones (scaled by ``base_j / base_i``)."""
    w = coef * base[None, :] / base[:, None] * (1 << FRAC_BITS)
    return np.clip(np.rint(w), -COEF_LIMIT, COEF_LIMIT).astype(np.int64)


def _make_predictor(
    z_in: list[np.ndarray] | None,
    z_out: np.ndarray,
    a: list[np.ndarray] | None,
    base: np.ndarray,
    intra: bool | str,
) -> PredictorTables:
    """Integer predictor tables from centred previous frames ``z_in[l] (M,K)`` (lag l+1) with feature-domain
    coefficients ``a[l] (K,K)`` → frames ``z_out (M,K)``."""
    k = z_out.shape[1]
    resid = z_out if a is None else z_out - sum(zi @ al.T for zi, al in zip(z_in, a))
    b = np.zeros((k, k))
    if intra == "pose" and len(resid) > POSE_DIM:  # condition within the pose block only
        b[:POSE_DIM, :POSE_DIM], _ = _ldl_predictor(np.cov(resid[:, :POSE_DIM], rowvar=False))
    elif intra and intra != "pose" and len(resid) > k:
        b, _ = _ldl_predictor(np.cov(resid, rowvar=False) if len(resid) > 1 else np.eye(k))
    v = np.tril(_integerize(b, base), -1)
    w = (
        np.zeros((1, k, k), np.int64)
        if a is None
        else np.stack([_integerize((np.eye(k) - b) @ al, base) for al in a])
    )
    # Feature-domain coefficients actually used (after rounding), for the constant term and the residuals.
    scale = base[:, None] / base[None, :] / (1 << FRAC_BITS)
    b_used = v.astype(np.float64) * scale
    c0 = np.zeros(k)  # indices are centred on the mean (CodecTables.quantize): no constant term
    pred = z_out @ b_used.T
    if z_in is not None:
        pred = pred + sum(zi @ (wl.astype(np.float64) * scale).T for zi, wl in zip(z_in, w))
    u = z_out - pred
    sigma = np.sqrt(2.0) * np.maximum(np.mean(np.abs(u), axis=0), 1e-12) if len(u) else np.ones(k)
    gamma = (
        ((w.astype(np.float64) ** 2).sum((0, 2)) + (v.astype(np.float64) ** 2).sum(1))
        / (1 << 2 * FRAC_BITS)
        / 12
    )
    return PredictorTables(W=w, V=v, c0=c0, sigma=sigma, gamma=gamma)


def fit_codec(
    code: np.ndarray,
    pose: np.ndarray,
    valid: np.ndarray | None = None,
    predictor: str = "auto",
    intra: bool | str | None = None,
    ridge: float = 3.0,
    step_scale: float = 1.0,
    face_model: tuple[np.ndarray, np.ndarray] | None = None,
    code_to_expression: np.ndarray | None = None,
    order: int | None = None,
) -> CodecTables:
    """Fit codec tables from training features ``code (N,D)``, ``pose (N,12)`` (``valid (N,)`` optional).

    ``predictor``: "diag" (per-dim AR(1)), "full" (ridge VAR(1) over all dims) or "auto" (the one that codes
    the last 20% of the given frames in fewer bits when fitted on the first 80%). ``intra`` conditions each
    dim on the already-coded dims of the same frame (True), only within the pose ("pose"), or not (False);
    None: chosen like "auto". ``order``: temporal predictor from the last frame (1) or the last two frames
    (2: per-dim AR(2), whose lag-2 term averages out part of the tracker noise); None: chosen like "auto".

    Base steps (× ``step_scale``): with ``face_model`` ``(mean (L,3), basis (3L,E))`` they are uniform in
    landmark space (:mod:`nerfvc.codec.weights`; for an embedding code pass the receiver's linear
    ``code_to_expression (E, D)``), sized so that Q = 1 puts the landmark error at or a little below
    the tracker's jitter; without it, each dim's step is the tracker's jitter on that dim.
    """
    code = np.asarray(code, dtype=np.float64)
    n = len(code)
    if n < 2:
        raise InputError(f"need at least 2 training frames to fit codec tables, got {n}")
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    if valid.sum() < 2:
        valid = np.ones(n, bool)
    pose = np.asarray(pose, dtype=np.float64)
    r = nearest_rotation(pose[valid, :9].reshape(-1, 3, 3))
    pose_ref = Rotation.from_matrix(r).mean().as_matrix()
    tmp = _empty_tables(code.shape[1], pose_ref)
    x = tmp.features_to_vec(code, pose)  # (N, K)
    weights = None
    if face_model is not None:
        from nerfvc.codec.weights import landmark_weights

        weights = landmark_weights(
            *face_model, pose_ref, x[valid, 3:6].mean(0), code.shape[1], code_to_expression
        )
    if order not in (None, 1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if predictor == "auto" or intra is None or order is None:
        from nerfvc.codec.coder import estimate_stream_bits

        ntr = max(2, int(0.8 * n))
        preds = ("diag", "full") if predictor == "auto" else (predictor,)
        intras = (False, "pose", True) if intra is None else (intra,)
        orders = (1, 2) if order is None else (order,)
        if n - ntr < 5:
            predictor, intra, order = preds[0], intras[0], orders[0]
        else:
            best = None
            for cand in preds:
                for ci in intras:
                    for co in orders:
                        t = _fit(x[:ntr], valid[:ntr], pose_ref, cand, ci, ridge, step_scale, weights, co)
                        bits = estimate_stream_bits(t, x[ntr:], 0)
                        if best is None or bits < best[0]:
                            best = (bits, cand, ci, co)
            predictor, intra, order = best[1], best[2], best[3]
    return _fit(x, valid, pose_ref, predictor, intra, ridge, step_scale, weights, order)


def _empty_tables(d: int, pose_ref: np.ndarray) -> CodecTables:
    k = POSE_DIM + d
    z = np.zeros(k)
    p = PredictorTables(np.zeros((1, k, k), np.int64), np.zeros((k, k), np.int64), z, np.ones(k), z)
    return CodecTables(d, z, np.ones(k), z, np.ones(k), z, pose_ref, p, p)


def _fit(
    x: np.ndarray,
    valid: np.ndarray,
    pose_ref: np.ndarray,
    predictor: str,
    intra: bool | str,
    ridge: float,
    step_scale: float,
    weights: np.ndarray | None = None,
    order: int = 1,
) -> CodecTables:
    n, k = x.shape
    xv = x[valid]
    mean = xv.mean(0)
    std = xv.std(0)
    jit = _jitter(x, valid)
    # Indices are bounded by Q_LIMIT: a dimension (near-)constant in training, e.g. a fixed camera distance,
    # still needs a step coarse enough that test values as far from the mean as the value itself fit.
    floor = np.maximum.reduce([1e-3 * std, (np.abs(mean) + 4 * std) * 2.0**-20, np.full_like(std, 1e-9)])
    base = np.where(jit > 0, jit, 0.1 * std)
    if weights is not None:
        known = np.isfinite(weights) & (weights > 0)
        # tracker jitter in landmark space (RMS per point, metres), spread evenly over the weighted dims
        tau = np.sqrt(np.sum((weights[known] * jit[known]) ** 2)) * LANDMARK_STEP_FACTOR
        if tau > 0:
            base = np.where(known, tau / np.where(known, weights, 1.0), base)
    base = np.maximum(base, floor) * step_scale
    z = x - mean
    pair = valid[1:] & valid[:-1]
    zin, zout = z[:-1][pair], z[1:][pair]
    var_in = np.maximum((zin**2).mean(0), 1e-30) if len(zin) else np.ones(k)
    ar = np.clip((zin * zout).mean(0) / var_in, -1.0, 1.0) if len(zin) else np.zeros(k)
    if predictor not in ("diag", "full"):
        raise ValueError(f"unknown predictor {predictor!r}")
    trip = valid[2:] & valid[1:-1] & valid[:-2]
    if order == 2 and trip.sum() > 4:
        # Per-dim AR(2) by (slightly ridged) least squares: z_t = a1 z_(t-1) + a2 z_(t-2).
        z_in = [z[1:-1][trip], z[:-2][trip]]
        zout = z[2:][trip]
        g11, g22 = (z_in[0] ** 2).mean(0), (z_in[1] ** 2).mean(0)
        g12 = (z_in[0] * z_in[1]).mean(0)
        r1, r2 = (z_in[0] * zout).mean(0), (z_in[1] * zout).mean(0)
        lam = 1e-3 * (g11 + g22) / 2 + 1e-30
        det = (g11 + lam) * (g22 + lam) - g12**2
        coefs = [np.clip((r1 * (g22 + lam) - r2 * g12) / det, -2, 2)]
        coefs.append(np.clip(((g11 + lam) * r2 - g12 * r1) / det, -1, 1))
    else:
        order, z_in, coefs = 1, [zin], [ar]
    a = [np.diag(c) for c in coefs]
    if predictor == "full" and len(zout) > 1:
        # + a ridge-regularized cross-dim correction from the last frame (standardized units), so the
        # regularization shrinks towards the per-dim predictor rather than towards zero.
        sd = np.sqrt(var_in)
        xs = z_in[0] / sd
        rs = (zout - sum(zi * c for zi, c in zip(z_in, coefs))) / sd  # what the per-dim AR leaves
        g = xs.T @ xs + ridge * len(xs) * np.eye(k)
        corr = np.linalg.solve(g, xs.T @ rs).T
        np.fill_diagonal(corr, 0.0)
        a[0] = a[0] + corr * sd[:, None] / sd[None, :]
    else:
        predictor = "diag"
    key = _make_predictor(None, z[valid], None, base, intra)
    delta = _make_predictor(z_in, zout, a, base, intra)
    info = {
        "train_frames": int(n),
        "valid_frames": int(valid.sum()),
        "intra": intra if isinstance(intra, str) else bool(intra),
        "order": int(order),
        "ridge": ridge,
        "steps": "landmark" if weights is not None else "jitter",
    }
    return CodecTables(k - POSE_DIM, mean, std, jit, base, ar, pose_ref, key, delta, predictor, info)


def write_codec_tables(
    model_dir: str | Path, expression: np.ndarray, pose: np.ndarray, **kw: Any
) -> CodecTables:
    """Fit tables on training features; write ``codec.json`` into ``model_dir`` (before finalizing it).

    Code dims beyond the face model's expression basis (the torso shift) get steps from their own jitter.
    """
    if "face_model" not in kw:
        from nerfvc.codec.weights import load_face_model

        kw["face_model"] = load_face_model(model_dir)
    tables = fit_codec(expression, pose, **kw)
    tables.save(Path(model_dir) / CODEC_FILE)
    return tables
