"""One-euro filtering of per-frame features (Casiez et al., CHI 2012).

A low-pass filter whose cutoff rises with the signal's speed: still → heavy smoothing (no jitter), fast →
little smoothing (little lag). :class:`FeatureSmoother` applies it to pose (rotation entries, then
re-orthonormalised to a proper rotation; translation in cm) and expression (scaled to the RMS landmark
displacement in mm it causes: the basis is orthonormal, so coefficient c moves the 478 points by c/√478 RMS).
Low-variance (mostly noise) coefficients then move slowly and get smoothed hard, while large, fast motions
(jaw opening) get through with little lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Vector one-euro filter: ``f(x, t)`` returns the filtered ``x`` (any shape) at time ``t`` (s)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next sample passes through unfiltered."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()


@dataclass(frozen=True)
class SmoothingParams:
    """One-euro parameters per feature group (cutoffs in Hz; beta per unit of the group's scaled speed)."""

    # defaults chosen on german + d9 (benchmarks/tracking.py): jitter roughly halved, lag < 1 frame
    rot_min_cutoff: float = 1.0
    rot_beta: float = 10.0  # rotation entries (≈ radians)
    trans_min_cutoff: float = 1.0
    trans_beta: float = 1.0  # translation in cm
    expr_min_cutoff: float = 1.0
    expr_beta: float = 1.0  # expression in mm of RMS landmark displacement
    d_cutoff: float = 1.0


class FeatureSmoother:
    """Smooth ``(expression (E,), pose (12,))`` over time (expression coefficients in metres)."""

    def __init__(self, params: SmoothingParams | None = None, num_points: int = 478):
        p = params or SmoothingParams()
        self.scale = np.sqrt(num_points) / 1000.0  # coefficient (m) → RMS landmark displacement (mm)
        self._rot = OneEuroFilter(p.rot_min_cutoff, p.rot_beta, p.d_cutoff)
        self._trans = OneEuroFilter(p.trans_min_cutoff, p.trans_beta, p.d_cutoff)
        self._expr = OneEuroFilter(p.expr_min_cutoff, p.expr_beta, p.d_cutoff)

    def reset(self) -> None:
        """Forget the state of every group."""
        for f in (self._rot, self._trans, self._expr):
            f.reset()

    def __call__(self, expression: np.ndarray, pose: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Filtered ``expression (E,)`` and ``pose (12,)`` (rotation projected back onto SO(3))."""
        r = self._rot(pose[:9], t).reshape(3, 3)
        u, _, vt = np.linalg.svd(r)
        d = np.sign(np.linalg.det(u @ vt))
        r = u @ np.diag([1.0, 1.0, d]) @ vt
        tr = self._trans(np.asarray(pose[9:12]) * 100.0, t) / 100.0
        e = self._expr(np.asarray(expression) / self.scale, t) * self.scale
        return e.astype(np.float32), np.concatenate([r.reshape(9), tr]).astype(np.float32)


def smooth_sequence(
    expression: np.ndarray, pose: np.ndarray, times: np.ndarray, params: SmoothingParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A whole clip's features through one :class:`FeatureSmoother`, frame by frame in time order, exactly
    as the sender's tracker filters them live: expression ``(N, E)``, pose ``(N, 12)``, times ``(N,)`` (s)."""
    smoother = FeatureSmoother(params)
    pairs = [smoother(e, p, float(t)) for e, p, t in zip(expression, pose, times, strict=True)]
    return np.stack([e for e, _ in pairs]), np.stack([p for _, p in pairs])
