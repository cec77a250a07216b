"""Synthetic AR(1) feature streams for tests and benchmarks (until real datasets exist)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def synthetic_features(
    n: int, dim: int = 79, seed: int = 0, jitter: float = 0.02, rho: float = 0.97
) -> tuple[np.ndarray, np.ndarray]:
    """AR(1) expression ``(n, dim)`` with PCA-like decaying variances plus white tracker jitter, and a
    plausible head pose ``(n, 12)`` (face towards an OpenCV camera, small AR(1) motion, depth ~ 3)."""
    rng = np.random.default_rng(seed)
    std = 1.0 / (1.0 + np.arange(dim)) ** 0.9  # (dim,)
    innov = std * np.sqrt(1 - rho**2)
    z = np.zeros((n, dim))
    z[0] = rng.normal(size=dim) * std
    for t in range(1, n):
        z[t] = rho * z[t - 1] + innov * rng.normal(size=dim)
    code = z + jitter * rng.normal(size=(n, dim))
    ang = np.zeros((n, 3))
    tr = np.zeros((n, 3))
    for t in range(1, n):
        ang[t] = 0.98 * ang[t - 1] + 0.01 * rng.normal(size=3)
        tr[t] = 0.98 * tr[t - 1] + 0.005 * rng.normal(size=3)
    ang += 0.002 * rng.normal(size=(n, 3))
    base = Rotation.from_euler("x", np.pi)  # canonical +z face → facing an OpenCV camera
    rot = (Rotation.from_rotvec(ang) * base).as_matrix().reshape(n, 9)
    t = tr + np.array([0.0, 0.0, 3.0]) + 0.001 * rng.normal(size=(n, 3))
    return code.astype(np.float32), np.concatenate([rot, t], axis=1).astype(np.float32)
