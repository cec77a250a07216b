"""Person-specific linear morphable model built from face-mesh landmarks (see docs/face.md).

Pipeline:
1. **Lift** each frame's mediapipe landmarks (pixels ``u, v`` + relative depth ``z``) to camera space with the
   pinhole camera: a metric scale (metres per pixel at the face) comes from the size of a set of stable
   landmarks, the face depth follows from it, and every point is back-projected along its own ray, so the
   lifted points project *exactly* onto the tracked 2D landmarks.
2. **Rigid generalized Procrustes** (rotation + translation, no scale: apparent size changes are depth) with
   per-landmark weights that favour points that do not move with expressions → mean shape ``M`` in canonical
   head space and a pose ``[R | t]`` per frame.
3. **PCA** of the aligned residuals → orthonormal expression basis ``B`` (E columns, 79 by default).

Canonical head space: metres (nominal, from an assumed 9 cm outer-eye-corner distance), origin at the
centroid of the mean landmarks, axes like the camera's for a frontal face (x towards the subject's left =
image right, y down, z away from the camera into the head), so a frontal face has ``R ≈ I``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nerfvc.camera import Camera
from nerfvc.datasetdir import FACE_MODEL_FILE, FACE_MODEL_JSON
from nerfvc.errors import InputError
from nerfvc.face.mesh import CHIN, EYE_OUTER, FOREHEAD, NUM_LANDMARKS, STABLE
from nerfvc.face.smoothing import SmoothingParams
from nerfvc.features import rt_to_pose
from nerfvc.fsutil import atomic_path, read_json, write_json_atomic

EYE_DISTANCE_M = 0.09  # nominal 3D distance between the outer eye corners (adult average ≈ 9 cm)
DEFAULT_FOV_DEG = 30.0  # nominal field of view across the longer side of the dataset frames
MODEL_VERSION = 1


# ----------------------------------------------------------------------------------------------- lifting
def stable_radius_px(landmarks: np.ndarray) -> np.ndarray:
    """RMS radius of the stable landmarks (3D pixel units): ``(..., 478, 3)`` → ``(...)``."""
    s = landmarks[..., STABLE, :]
    return np.sqrt(((s - s.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))


def scale_constant(landmarks: np.ndarray) -> float:
    """Metres that the stable-landmark RMS radius spans, from the nominal eye distance. ``(N, 478, 3)``."""
    eye = np.linalg.norm(landmarks[:, EYE_OUTER[0]] - landmarks[:, EYE_OUTER[1]], axis=-1)
    return float(EYE_DISTANCE_M * np.median(stable_radius_px(landmarks) / eye))


def lift(landmarks: np.ndarray, camera: Camera, radius_m: float) -> np.ndarray:
    """Camera-space points ``(..., 478, 3)`` (metres) from pixel landmarks ``(..., 478, 3)``.

    Metres per pixel at the face ``m = radius_m / stable_radius_px``; the stable centroid sits at depth
    ``f · m``; each point's depth is offset by its relative mediapipe depth × ``m``; x, y are back-projected
    along the pixel's ray, so ``camera.project(lift(lm)) == lm[..., :2]``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    m = radius_m / stable_radius_px(lm)  # (...)
    z0 = camera.fx * m
    zc = lm[..., STABLE, 2].mean(-1)
    z = z0[..., None] + (lm[..., 2] - zc[..., None]) * m[..., None]
    x = (lm[..., 0] - camera.cx) * z / camera.fx
    y = (lm[..., 1] - camera.cy) * z / camera.fy
    return np.stack([x, y, z], axis=-1)


# --------------------------------------------------------------------------------------------- procrustes
def rigid_align(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Kabsch: ``R (..,3,3), t (..,3)`` minimising ``Σ w_i |R src_i + t − dst_i|²``; det R = +1.

    ``src`` ``(P, 3)`` or ``(..., P, 3)``, ``dst`` ``(..., P, 3)``, ``w`` ``(P,)``.
    """
    w = w / w.sum()
    cs = (w[:, None] * src).sum(-2)
    cd = (w[:, None] * dst).sum(-2)
    h = np.einsum("p,...pi,...pj->...ij", w, src - cs[..., None, :], dst - cd[..., None, :])
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.swapaxes(-1, -2) @ u.swapaxes(-1, -2)))
    fix = np.ones((*h.shape[:-2], 3))
    fix[..., 2] = d
    r = vt.swapaxes(-1, -2) @ (fix[..., :, None] * u.swapaxes(-1, -2))
    t = cd - np.einsum("...ij,...j->...i", r, cs)
    return r, t


def _canonical_frame(mean: np.ndarray) -> np.ndarray:
    """Rotation whose rows are the canonical axes (x: right eye→left eye, y: forehead→chin, z = x × y)."""
    x = mean[EYE_OUTER[1]] - mean[EYE_OUTER[0]]
    x /= np.linalg.norm(x)
    y = mean[CHIN] - mean[FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)])


def generalized_procrustes(
    points: np.ndarray, weights: np.ndarray | None = None, iters: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rigid GPA of camera-space shapes ``(N, P, 3)`` → mean ``(P, 3)``, ``R (N,3,3)``, ``t (N,3)``."""
    p = points.shape[1]
    w = np.ones(p) if weights is None else weights
    mean = points[0] - points[0].mean(0)
    for _ in range(iters):
        r, t = rigid_align(mean, points, w)
        aligned = np.einsum("nji,npj->npi", r, points - t[:, None])  # R^T (X - t)
        new = aligned.mean(0)
        new -= new.mean(0)
        a = _canonical_frame(new)
        new = new @ a.T
        if np.abs(new - mean).max() < 1e-9:
            mean = new
            break
        mean = new
    r, t = rigid_align(mean, points, w)
    return mean, r, t


# ------------------------------------------------------------------------------------------------- model
@dataclass
class FaceModel:
    """Linear morphable model ``shape = mean + (basis @ expression).reshape(478, 3)`` (canonical space)."""

    mean: np.ndarray  # (478, 3) float64, metres, canonical
    basis: np.ndarray  # (1434, E) orthonormal columns
    weights: np.ndarray  # (478,) rigid-alignment weights
    radius_m: float  # metric size of the stable-landmark RMS radius
    explained_variance: np.ndarray  # (E,) variance of each coefficient over the training frames
    total_variance: float  # total aligned-residual variance (sum over all 1434 dims)
    head_bounds: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))  # (2, 3) [min, max] canonical
    info: dict = field(default_factory=dict)
    # the one-euro filter the training features went through (None: raw per-frame fits); the sender's tracker
    # filters with the same, so that what it sends is distributed as what the NeRF was trained on
    smoothing: SmoothingParams | None = None

    @property
    def expr_dims(self) -> int:
        """Number of expression coefficients E."""
        return self.basis.shape[1]

    @property
    def explained_variance_ratio(self) -> float:
        """Fraction of the aligned training variance the E basis vectors explain."""
        return float(self.explained_variance.sum() / max(self.total_variance, 1e-30))

    # ---- building
    @classmethod
    def build(cls, landmarks: np.ndarray, camera: Camera, expr_dims: int = 79) -> FaceModel:
        """Build the model from tracked landmarks ``(N, 478, 3)`` (pixels of ``camera``'s frames)."""
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3) or len(landmarks) < 2:
            raise ValueError(f"need landmarks (N>=2, 478, 3), got {landmarks.shape}")
        radius_m = scale_constant(landmarks)
        pts = lift(landmarks, camera, radius_m)
        mean, r, t = generalized_procrustes(pts)
        res = np.einsum("nji,npj->npi", r, pts - t[:, None]) - mean
        var = (res**2).sum(-1).mean(0)  # (478,)
        weights = 1.0 / (var + np.median(var))
        weights /= weights.mean()
        mean, r, t = generalized_procrustes(pts, weights)
        res = (np.einsum("nji,npj->npi", r, pts - t[:, None]) - mean).reshape(len(pts), -1)  # (N, 1434)
        mean = mean + res.mean(0).reshape(-1, 3)
        res = res - res.mean(0)
        _, s, vt = np.linalg.svd(res, full_matrices=False)
        var_all = s**2 / len(res)
        k = min(expr_dims, vt.shape[0])
        basis = np.zeros((res.shape[1], expr_dims))
        basis[:, :k] = vt[:k].T
        ev = np.zeros(expr_dims)
        ev[:k] = var_all[:k]
        return cls(mean, basis, weights, radius_m, ev, float(var_all.sum()))

    # ---- fitting
    def fit(self, landmarks: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """Pixel landmarks ``(..., 478, 3)`` → expression ``(..., E)``, pose ``(..., 12)`` of the model.

        Same rigid alignment as the model building, then expression = basis^T · aligned residual.
        """
        pts = lift(landmarks, camera, self.radius_m)
        r, t = rigid_align(self.mean, pts, self.weights)
        res = np.einsum("...ji,...pj->...pi", r, pts - t[..., None, :]) - self.mean
        expr = res.reshape(*res.shape[:-2], -1) @ self.basis
        return expr.astype(np.float32), rt_to_pose(r, t).astype(np.float32)

    def shape(self, expression: np.ndarray) -> np.ndarray:
        """Canonical shape ``(..., 478, 3)`` for expressions ``(..., E)``."""
        e = np.asarray(expression, dtype=np.float64)
        return self.mean + (e @ self.basis.T).reshape(*e.shape[:-1], NUM_LANDMARKS, 3)

    def posed(self, expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Camera-space points ``(..., 478, 3)`` for expressions ``(..., E)`` and poses ``(..., 12)``."""
        pose = np.asarray(pose, dtype=np.float64)
        r = pose[..., :9].reshape(*pose.shape[:-1], 3, 3)
        return np.einsum("...ij,...pj->...pi", r, self.shape(expression)) + pose[..., None, 9:12]

    def project(self, expression: np.ndarray, pose: np.ndarray, camera: Camera) -> np.ndarray:
        """Pixels ``(..., 478, 2)`` of the posed model."""
        return camera.project(self.posed(expression, pose))

    # ---- head box
    def default_head_bounds(self) -> np.ndarray:
        """Anthropometric head box ``(2, 3)`` around the face mesh (see docs/face.md)."""
        lo, hi = self.mean.min(0), self.mean.max(0)
        w = hi[0] - lo[0]  # face-mesh width (cheek contour), ≈ 0.14 m
        h = hi[1] - lo[1]  # forehead (landmark 10) to chin, ≈ 0.17 m
        cx = 0.5 * (lo[0] + hi[0])
        return np.array(
            [
                [
                    cx - 0.9 * w,
                    lo[1] - 0.75 * h,
                    lo[2] - 0.2 * w,
                ],  # ±0.9 w: ears + hair; 0.75 h above: skull+hair
                [
                    cx + 0.9 * w,
                    hi[1] + 0.55 * h,
                    lo[2] + 1.9 * w,
                ],  # 0.55 h below chin: top of the neck; depth
            ]
        )

    # ---- io
    def to_json(self) -> dict:
        """The ``face_model.json`` metadata."""
        return {
            "format": "nerfvc-face-model",
            "version": MODEL_VERSION,
            "num_landmarks": NUM_LANDMARKS,
            "expr_dims": self.expr_dims,
            "units": "metres (nominal: outer eye corners 9 cm apart)",
            "axes": "canonical head space: x to the subject's left (image right), y down, z into the head",
            "radius_m": self.radius_m,
            "explained_variance": [float(v) for v in self.explained_variance],
            "explained_variance_ratio": self.explained_variance_ratio,
            "total_variance": self.total_variance,
            "expression_std": [float(v) for v in np.sqrt(self.explained_variance)],
            "head_bounds": self.head_bounds.tolist(),
            "feature_smoothing": None if self.smoothing is None else asdict(self.smoothing),
            **self.info,
        }

    def save(self, directory: str | Path) -> None:
        """Write ``face_model.safetensors`` (mean, basis, weights, variances, head_bounds) + ``.json``."""
        from safetensors.numpy import save_file

        d = Path(directory)
        tensors = {
            "mean": self.mean.astype(np.float32),
            "basis": self.basis.astype(np.float32),
            "weights": self.weights.astype(np.float32),
            "explained_variance": self.explained_variance.astype(np.float32),
            "head_bounds": self.head_bounds.astype(np.float32),
        }
        with atomic_path(d / FACE_MODEL_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(d / FACE_MODEL_JSON, self.to_json())

    @classmethod
    def load(cls, directory: str | Path) -> FaceModel:
        """Read the model saved by :meth:`save` from a DATASET or MODEL directory."""
        from safetensors.numpy import load_file

        d = Path(directory)
        meta = read_json(d / FACE_MODEL_JSON)
        try:
            t = load_file(str(d / FACE_MODEL_FILE))
        except FileNotFoundError as e:
            raise InputError(f"{d / FACE_MODEL_FILE}: file not found") from e
        except Exception as e:
            raise InputError(f"{d / FACE_MODEL_FILE}: unreadable ({e})") from e
        keys = ("format", "version", "expr_dims", "explained_variance_ratio", "total_variance", "radius_m")
        info = {k: v for k, v in meta.items() if k not in (*keys, "explained_variance", "head_bounds")}
        info.pop("expression_std", None)
        smoothing = meta.get("feature_smoothing")  # absent in models made before it was recorded: raw fits
        try:
            params = None if smoothing is None else SmoothingParams(**smoothing)
        except TypeError as e:
            raise InputError(f"{d / FACE_MODEL_JSON}: bad feature_smoothing ({e})") from None
        missing = [k for k in ("mean", "basis", "weights", "explained_variance", "head_bounds") if k not in t]
        missing += [k for k in ("radius_m", "total_variance") if k not in meta]
        if missing:
            raise InputError(f"{d}: the face model lacks {', '.join(missing)} (written by `nerfvc prepare`)")
        return cls(
            mean=t["mean"].astype(np.float64),
            basis=t["basis"].astype(np.float64),
            weights=t["weights"].astype(np.float64),
            radius_m=float(meta["radius_m"]),
            explained_variance=t["explained_variance"].astype(np.float64),
            total_variance=float(meta["total_variance"]),
            head_bounds=t["head_bounds"].astype(np.float64),
            info={k: v for k, v in info.items() if k in ("head_bounds_coverage", "fov_deg", "num_frames")},
            smoothing=params,
        )


def load_face_model(directory: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean (L,3), basis (3L,E))`` from ``face_model.safetensors`` in a DATASET/MODEL dir, or None when
    it has none or lacks them (a synthetic dataset's holds only its head box): the codec's weights and the
    eyes need no more of the model than these (:meth:`FaceModel.load` reads the whole of it)."""
    path = Path(directory) / FACE_MODEL_FILE
    if not path.exists():
        return None
    from safetensors.numpy import load_file

    m = load_file(str(path))
    if "mean" not in m or "basis" not in m:
        return None
    return m["mean"].astype(np.float64), m["basis"].astype(np.float64)


def load_face_mesh_model(directory: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`load_face_model`'s mean and basis when they are a face mesh's (478 landmarks, whose eyes and
    mirror pairs the receiver and sender use), else None (none, or a synthetic dataset's)."""
    face = load_face_model(directory)
    return face if face is not None and face[0].shape == (NUM_LANDMARKS, 3) else None


def box_corners(bounds: np.ndarray) -> np.ndarray:
    """The 8 corners ``(8, 3)`` of an AABB ``(2, 3)``."""
    lo, hi = bounds
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def load_json_model(path: str | Path) -> dict:
    """The ``face_model.json`` metadata (for tools that do not need the arrays)."""
    return json.loads(Path(path).read_text())
