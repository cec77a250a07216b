"""Fitting codec tables (``codec.json``) to a person's training features: steps, means, AR predictors.

:func:`fit_codec` chooses the predictor (per-dim or full, intra-frame conditioning, AR order) by the bits
the range coder would spend on held-out frames; :func:`write_codec_tables` writes the result into a MODEL
directory. The tables' data types and file format live in :mod:`nerfvc.codec.tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.codec.coder import estimate_stream_bits, frame_bits
from nerfvc.codec.encoder import AUTO_FRAME_STEPS
from nerfvc.codec.tables import (
    CODEC_FILE,
    COEF_LIMIT,
    FRAC_BITS,
    POSE_DIM,
    CodecTables,
    PredictorTables,
    RateCurve,
    nearest_rotation,
)
from nerfvc.codec.weights import landmark_weights
from nerfvc.errors import InputError
from nerfvc.face.model import load_face_model
from nerfvc.features import interpolated_rotation_rms

# base step / tracker jitter, both in landmark space. 0.3: at Q = 1 the landmark error is 0.6-1.1× the
# tracker's jitter on the three development datasets (see docs/bitstream.md).
LANDMARK_STEP_FACTOR = 0.3
POSE_CAP_Q = 4.0  # pose steps stop at 4x their Q = 1 size (measured: benchmarks/rate_render.py)
# the step indices the rate curve is measured at: Q = 1/4 … 64 in steps of 2**(1/2)
RATE_CURVE_INDICES = np.arange(-32, 97, 8)
# the step indices the predictor is chosen at (Q = 1, 2, 4, 8: where 0.5-4 kbps code the development clips);
# conditioning on coarse dims can win at Q = 1 and cost 10-50% more bits at Q = 2-8 (docs/bitstream.md)
SELECTION_INDICES = (0, 16, 32, 48)


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
    if a is None:
        resid = z_out
    else:
        assert z_in is not None  # coefficients come with the frames they apply to
        resid = z_out - sum(zi @ al.T for zi, al in zip(z_in, a))
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
    pose_cap: float | None = POSE_CAP_Q,
) -> CodecTables:
    """Fit codec tables from training features ``code (N,D)``, ``pose (N,12)`` (``valid (N,)`` optional).

    ``predictor``: "diag" (per-dim AR(1)), "full" (ridge VAR(1) over all dims) or "auto" (the one that codes
    the last 20% of the given frames in fewer bits when fitted on the first 80%, over the step indices
    ``SELECTION_INDICES``). ``intra`` conditions each dim on the already-coded dims of the same frame (True),
    only within the pose ("pose"), or not (False); None: chosen like "auto". ``order``: temporal predictor
    from the last frame (1) or the last two frames (2: per-dim AR(2), whose lag-2 term averages out part of
    the tracker noise); None: chosen like "auto".

    Base steps (× ``step_scale``): with ``face_model`` ``(mean (L,3), basis (3L,E))`` they are uniform in
    landmark space (:mod:`nerfvc.codec.weights`; for an embedding code pass the receiver's linear
    ``code_to_expression (E, D)``), sized so that Q = 1 puts the landmark error at or a little below
    the tracker's jitter; without it, each dim's step is the tracker's jitter on that dim. ``pose_cap``: the
    pose steps stop growing at ``pose_cap`` × their base step (None: they grow with Q like the code's).
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
        weights = landmark_weights(
            *face_model, pose_ref, x[valid, 3:6].mean(0), code.shape[1], code_to_expression
        )
    if order not in (None, 1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if predictor == "auto" or intra is None or order is None:
        ntr = max(2, int(0.8 * n))
        preds = ("diag", "full") if predictor == "auto" else (predictor,)
        intras = (False, "pose", True) if intra is None else (intra,)
        orders = (1, 2) if order is None else (order,)
        if n - ntr < 5:
            predictor, intra, order = preds[0], intras[0], orders[0]
        else:
            best: tuple[float, str, bool | str, int] | None = None
            for cand in preds:
                for ci in intras:
                    for co in orders:
                        t = _fit(
                            x[:ntr], valid[:ntr], pose_ref, cand, ci, ridge, step_scale, weights, co, pose_cap
                        )
                        # geometric mean over the operating range: each rate's relative saving counts alike
                        cost = sum(
                            np.log(max(estimate_stream_bits(t, x[ntr:], s), 1e-9)) for s in SELECTION_INDICES
                        )
                        if best is None or cost < best[0]:
                            best = (cost, cand, ci, co)
            assert best is not None  # at least one candidate
            predictor, intra, order = best[1], best[2], best[3]
    tables = _fit(x, valid, pose_ref, predictor, intra, ridge, step_scale, weights, order, pose_cap)
    tables.frame_step_rotation_error = frame_step_rotation_error(pose, valid, max(AUTO_FRAME_STEPS))
    tables.rate_curve = rate_curve(tables, x[valid], max(AUTO_FRAME_STEPS))
    return tables


def rate_curve(tables: CodecTables, x: np.ndarray, max_step: int) -> RateCurve:
    """The training feature vectors ``x (N,K)`` coded with ``tables`` at each of :data:`RATE_CURVE_INDICES`:
    the mean ideal bits of a keyframe (every frame coded as one) and of a delta frame in one keyframe-less
    chain of every m-th frame, m = 1…``max_step`` (a clip too short for a step repeats the longest one)."""
    g = RATE_CURVE_INDICES
    key = np.array([frame_bits(tables, x, int(k), 1).mean() for k in g])
    delta = np.zeros((max_step, len(g)))
    for m in range(1, max_step + 1):
        if len(x[::m]) < 2:
            delta[m - 1] = delta[m - 2]
            continue
        delta[m - 1] = [frame_bits(tables, x[::m], int(k), len(x))[1:].mean() for k in g]
    return RateCurve(g.copy(), key, delta)


def frame_step_rotation_error(pose: np.ndarray, valid: np.ndarray, max_step: int) -> np.ndarray:
    """``(max_step,)``: RMS angle (degrees, over the ``valid`` frames) between ``pose (N,12)`` and the poses
    interpolated from every m-th frame as the decoder does, m = 1…max_step."""
    out = np.zeros(max_step)
    for m in range(2, min(max_step, len(pose) - 1) + 1):
        out[m - 1] = interpolated_rotation_rms(pose, pose[::m], m, valid)
    if len(pose) - 1 < max_step:  # too short a clip to tell: the longest step measured stands for the rest
        out[len(pose) - 1 :] = out[max(len(pose) - 2, 0)]
    return out


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
    pose_cap: float | None = None,
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
    tables = CodecTables(k - POSE_DIM, mean, std, jit, base, ar, pose_ref, key, delta, predictor, info)
    if pose_cap is not None:
        tables.pose_max_step = base[:POSE_DIM] * pose_cap
        tables.info["pose_cap"] = pose_cap
    return tables


def write_codec_tables(
    model_dir: str | Path, expression: np.ndarray, pose: np.ndarray, **kw: Any
) -> CodecTables:
    """Fit tables on training features; write ``codec.json`` into ``model_dir`` (before finalizing it).

    Code dims beyond the face model's expression basis (the torso shift) get steps from their own jitter.
    """
    if "face_model" not in kw:
        kw["face_model"] = load_face_model(model_dir)
    tables = fit_codec(expression, pose, **kw)
    tables.save(Path(model_dir) / CODEC_FILE)
    return tables
