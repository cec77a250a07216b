"""Label masks (0 background, 1 torso, 2 head) and the static background image.

The person comes from mediapipe selfie segmentation; the head/torso split uses the face mesh: the head is the
person above the jaw line (the lower face oval, extended sideways at the ear-level end points) plus the whole
face oval. Long hair hanging below ear level is therefore labelled torso (documented in docs/face.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from nerfvc.face.mesh import FACE_OVAL, JAW_LINE

BACKGROUND, TORSO, HEAD = 0, 1, 2


def head_region(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool ``(H, W)``: all above the jaw line, plus the face oval. ``landmarks`` ``(478, 3)`` pixels."""
    jaw = landmarks[JAW_LINE, :2]  # from the subject's left (image right) over the chin to the right
    big = 4 * (width + height)
    poly = np.concatenate(
        [[[jaw[0, 0] + big, jaw[0, 1]]], jaw, [[jaw[-1, 0] - big, jaw[-1, 1]]], [[-big, -big], [big, -big]]]
    )
    region = np.zeros((height, width), np.uint8)
    cv2.fillPoly(region, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    cv2.fillPoly(region, [np.round(landmarks[FACE_OVAL, :2] * 16).astype(np.int32)], 1, shift=4)
    return region.astype(bool)


def label_mask(person: np.ndarray, landmarks: np.ndarray | None, threshold: float = 0.5) -> np.ndarray:
    """uint8 ``(H, W)`` labels from a person probability ``(H, W)`` and the frame's landmarks ``(478, 3)``."""
    h, w = person.shape
    fg = person >= threshold
    out = np.where(fg, TORSO, BACKGROUND).astype(np.uint8)
    if landmarks is not None:
        head = head_region(landmarks, h, w)
        out[fg & head] = HEAD
        face = np.zeros((h, w), np.uint8)
        cv2.fillPoly(face, [np.round(landmarks[FACE_OVAL, :2] * 16).astype(np.int32)], 1, shift=4)
        out[face.astype(bool)] = HEAD  # the face is head even where the segmenter is unsure
    return out


def pull_push_fill(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown pixels of ``img`` ``(H, W, C)`` float from the known ones (bool ``(H, W)``), smoothly.

    Pull: an image pyramid of known-weighted colours and weights (averaging only known pixels). Push: from the
    coarsest level up, every pixel takes its own level's average where enough known pixels contributed and the
    upsampled coarser estimate elsewhere. Gives a diffuse fill without the streaks of local inpainting.
    """
    w: np.ndarray = known.astype(np.float32)
    c: np.ndarray = img.astype(np.float32) * w[..., None]
    levels = [(c, w)]
    while min(c.shape[:2]) > 2:
        c = cv2.resize(c, (max(1, c.shape[1] // 2), max(1, c.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_AREA)
        levels.append((c, w))
    est: np.ndarray | None = None
    for c, w in reversed(levels):
        mean = c / np.maximum(w, 1e-6)[..., None]
        if est is None:
            total = w.sum()
            est = np.broadcast_to(c.reshape(-1, c.shape[-1]).sum(0) / max(total, 1e-6), c.shape).copy()
        else:
            est = cv2.resize(est, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        alpha = np.clip(w * 2.0, 0.0, 1.0)[..., None]  # ≥ half the footprint known → trust this level
        est = alpha * mean + (1 - alpha) * est
    assert est is not None  # levels is never empty
    return est


def estimate_background(
    frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], margin: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Static background RGB ``(H, W, 3)`` uint8 and the bool ``(H, W)`` map of pixels that had to be filled.

    Per pixel: median over the frames where it is background (the person mask dilated by ``margin`` × size
    to drop the segmentation halo); pixels never seen (behind a static person) are filled by
    :func:`pull_push_fill`.
    """
    h, w = masks[0].shape
    k = max(3, round(margin * max(h, w)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    stack = np.empty((len(frames), h, w, 3), np.float32)
    for i, (f, m) in enumerate(zip(frames, masks)):
        person = cv2.dilate((m > 0).astype(np.uint8), kernel).astype(bool)
        stack[i] = f
        stack[i][person] = np.nan
    seen = np.asarray(~np.isnan(stack[..., 0]).all(0))  # (H, W) bool
    med = np.zeros((h, w, 3), np.float32)
    if seen.any():
        # median of the valid samples per pixel: NaN sorts last, so take the middle of the first `count`
        vals = np.sort(stack[:, seen], axis=0)  # (F, P, 3)
        count = (~np.isnan(vals[..., 0])).sum(0)  # (P,)
        lo, hi = (count - 1) // 2, count // 2
        cols = np.arange(vals.shape[1])
        med[seen] = 0.5 * (vals[lo, cols] + vals[hi, cols])
    bg = np.clip(np.round(med), 0, 255).astype(np.uint8)
    holes = ~seen
    if holes.any():
        if not seen.any():
            return np.full((h, w, 3), 127, np.uint8), holes
        filled = pull_push_fill(bg.astype(np.float32), seen)
        bg[holes] = np.clip(np.round(filled[holes]), 0, 255).astype(np.uint8)
    return bg, holes
