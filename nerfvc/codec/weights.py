"""Per-dimension distortion weights from the person's face model: how far landmarks move per unit.

With weights ``w (K,)`` (metres of RMS landmark displacement per unit of each coded dimension), steps
``tau / w_i`` spend the error budget evenly in landmark space; the face model's basis is orthonormal, so
for expression coefficients this is a uniform step (reverse water-filling: low-variance dims cost ~0 bits).
"""

from __future__ import annotations

import numpy as np

from nerfvc.codec.tables import POSE_DIM


def landmark_weights(
    mean_shape: np.ndarray,
    basis: np.ndarray | None,
    pose_ref: np.ndarray,
    t_mean: np.ndarray,
    code_dim: int,
    code_to_expression: np.ndarray | None = None,
) -> np.ndarray:
    """Weights ``(6 + D,)``: RMS landmark displacement (m) per unit of [rotvec (rad), t (m), code].

    Code dims get the column norms / sqrt(L) of ``basis (3L, E)`` — or of ``basis @ code_to_expression``
    ``(E, D)`` for an embedding code whose receiver expands it linearly — else NaN (unknown units: the
    caller falls back to jitter-based steps for them). Without ``code_to_expression`` a code longer than
    the basis is the expression followed by other values (the torso shift): only those get NaN.
    """
    pts = mean_shape @ pose_ref.T + t_mean  # (L, 3) camera space at the mean pose
    rel = pts - t_mean
    w = np.empty(POSE_DIM + code_dim)
    for a in range(3):  # small rotation about camera axis a: displacement = e_a × (R0 X)
        e = np.zeros(3)
        e[a] = 1.0
        w[a] = np.sqrt((np.cross(e, rel) ** 2).sum(1).mean())
    w[3] = w[4] = 1.0
    w[5] = np.sqrt((pts[:, :2] ** 2).sum(1).mean()) / max(float(t_mean[2]), 1e-6)  # depth → image scale
    if (
        basis is not None
        and code_to_expression is not None
        and code_to_expression.shape == (basis.shape[1], code_dim)
    ):
        basis = basis @ code_to_expression
    w[POSE_DIM:] = np.nan
    if basis is not None and (basis.shape[1] == code_dim or code_to_expression is None):
        k = min(basis.shape[1], code_dim)
        w[POSE_DIM : POSE_DIM + k] = np.linalg.norm(basis[:, :k], axis=0) / np.sqrt(len(mean_shape))
    return w
