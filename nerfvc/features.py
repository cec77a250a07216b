"""Per-frame face features: the values that cross the sender → bitstream → receiver boundary.

Conventions (see docs/architecture.md):
- ``pose`` is 12-d: a 3×3 rotation ``R`` (row-major, 9 values) then a translation ``t`` (3 values).
  It maps canonical head space to camera space: ``X_cam = R @ X_can + t``.
- ``expression`` is the vector of PCA coefficients of the person's linear expression basis (79-d by default).
- ``landmarks`` are mediapipe face-mesh points in pixels of the frame they were tracked on: ``(x, y, z)`` with
  ``z`` the mesh's relative depth scaled like ``x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerfvc.errors import InputError
from nerfvc.fsutil import atomic_path, read_json
from nerfvc.modeldir import model_torso_dims

FEATURE_ARRAYS = ("expression", "pose", "landmarks", "valid", "timestamps", "torso")


@dataclass
class FaceFeatures:
    """What the sender's tracker returns for one frame."""

    expression: np.ndarray  # (E,) float32, PCA coefficients
    pose: np.ndarray  # (12,) float32, [R row-major | t]
    landmarks: np.ndarray  # (L, 3) float32, pixels
    ok: bool  # False when no (single) face was found; the other fields then hold the last good values
    torso: np.ndarray | None = None  # (2,) float32 torso shift (nerfvc.face.torso), if the person has one


def model_input(expression: np.ndarray, torso: np.ndarray | None, torso_dims: int) -> np.ndarray:
    """The vector a NeRF with ``torso_dims`` torso inputs is driven by (and the codec sends): expression
    ``(..., E)`` followed by the torso shift ``(..., 2)`` (zeros if ``torso`` is None) when ``torso_dims``."""
    expression = np.asarray(expression, np.float32)
    if not torso_dims:
        return expression
    if torso is None:
        torso = np.zeros((*expression.shape[:-1], torso_dims), np.float32)
    return np.concatenate([expression, np.asarray(torso, np.float32)], axis=-1)


def pose_to_rt(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split poses ``(..., 12)`` into rotations ``(..., 3, 3)`` and translations ``(..., 3)``."""
    pose = np.asarray(pose)
    return pose[..., :9].reshape(*pose.shape[:-1], 3, 3), pose[..., 9:12]


def rt_to_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Join rotations ``(..., 3, 3)`` and translations ``(..., 3)`` into poses ``(..., 12)``."""
    rotation = np.asarray(rotation)
    return np.concatenate([rotation.reshape(*rotation.shape[:-2], 9), np.asarray(translation)], axis=-1)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the rotations of poses ``a`` and ``b`` ``(..., 12)`` → ``(...)``."""
    ra, _ = pose_to_rt(np.asarray(a, np.float64))
    rb, _ = pose_to_rt(np.asarray(b, np.float64))
    cos = (np.einsum("...ij,...ij->...", ra, rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def upsample_features(
    code: np.ndarray, pose: np.ndarray, factor: int, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features sent for every ``factor``-th frame → all ``num_frames`` frames: codes and translations
    linearly, rotations by slerp; frames after the last sent one hold it.

    ``code (M, D)``, ``pose (M, 12)`` are frames ``0, factor, 2·factor, …``; returns ``(num_frames, D)``,
    ``(num_frames, 12)`` float32.
    """
    from scipy.spatial.transform import Rotation, Slerp

    code, pose = np.asarray(code, np.float64), np.asarray(pose, np.float64)
    if factor < 1 or len(code) != len(pose) or len(code) == 0:
        raise ValueError(f"need factor >= 1 and matching non-empty features (factor {factor}, {len(code)})")
    sent = np.arange(len(code)) * factor  # (M,) frame index of each sent frame
    at = np.minimum(np.arange(num_frames), sent[-1]).astype(np.float64)  # (N,)
    code_out = np.stack([np.interp(at, sent, code[:, j]) for j in range(code.shape[1])], axis=1)
    t_out = np.stack([np.interp(at, sent, pose[:, 9 + j]) for j in range(3)], axis=1)
    r, _ = pose_to_rt(pose)
    u, _, vt = np.linalg.svd(r)  # nearest proper rotations, as slerp needs them
    if len(code) == 1:
        r_out = np.broadcast_to(u @ vt, (num_frames, 3, 3))
    else:
        r_out = Slerp(sent, Rotation.from_matrix(u @ vt))(at).as_matrix()
    return code_out.astype(np.float32), rt_to_pose(r_out, t_out).astype(np.float32)


def interpolated_rotation_rms(
    pose: np.ndarray, sent_pose: np.ndarray, factor: int, valid: np.ndarray | None = None
) -> float:
    """RMS angle (degrees) between ``pose (N,12)`` and the poses :func:`upsample_features` interpolates from
    ``sent_pose`` (frames ``0, factor, 2·factor, …``), over the ``valid (N,)`` frames (default all)."""
    _, p_hat = upsample_features(np.zeros((len(sent_pose), 1)), sent_pose, factor, len(pose))
    err = rotation_angle_deg(pose, p_hat)
    return float(np.sqrt(np.mean((err if valid is None else err[valid]) ** 2)))


def save_features(path: str | Path, **arrays: np.ndarray) -> None:
    """Write per-frame arrays (``expression`` (N,E), ``pose`` (N,12), ...) to an ``.npz`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        data: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(f, **data)


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """Read a features ``.npz``; requires at least ``expression`` (N,E) and ``pose`` (N,12)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a features .npz ({e})") from e
    for key in ("expression", "pose"):
        if key not in arrays:
            raise InputError(f"{path}: missing array '{key}'")
    n = len(arrays["pose"])
    if arrays["pose"].shape != (n, 12) or arrays["expression"].ndim != 2 or len(arrays["expression"]) != n:
        raise InputError(
            f"{path}: expected expression (N,E) and pose (N,12), got "
            f"{arrays['expression'].shape} and {arrays['pose'].shape}"
        )
    return arrays


def model_inputs(feats: dict[str, np.ndarray], model_dir: str | Path) -> np.ndarray:
    """A features file's expression (N,E), followed by its torso shift when the MODEL takes one; decoded
    features (whose expression already holds the model's whole input) are returned as they are."""
    torso_dims = model_torso_dims(model_dir)
    expr = feats["expression"]
    if not torso_dims or "torso" in feats:
        return model_input(expr, feats.get("torso"), torso_dims)
    e = int(read_json(Path(model_dir) / "nerf.json")["model"]["expression_dim"])
    if expr.shape[1] == e + torso_dims:
        return expr
    raise InputError(
        f"{model_dir} drives the torso by a torso shift, but the features have none "
        "(encode the video itself, or use features from a dataset prepared by this version)"
    )
