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


def estimate_background(
    frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], margin: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Static background RGB ``(H, W, 3)`` uint8 and the bool ``(H, W)`` map of pixels that had to be filled.

    Per pixel: median over the frames where it is background (the person mask dilated by ``margin`` × size
    to drop the segmentation halo); pixels never seen are filled with ``cv2.inpaint`` (Telea), done at reduced
    resolution for large holes and blended in.
    """
    h, w = masks[0].shape
    k = max(3, round(margin * max(h, w)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    stack = np.empty((len(frames), h, w, 3), np.float32)
    for i, (f, m) in enumerate(zip(frames, masks)):
        person = cv2.dilate((m > 0).astype(np.uint8), kernel).astype(bool)
        stack[i] = f
        stack[i][person] = np.nan
    seen = ~np.isnan(stack[..., 0]).all(0)
    med = np.zeros((h, w, 3), np.float32)
    if seen.any():
        # nanmedian only over the seen pixels (all-NaN columns would warn)
        med[seen] = np.nanmedian(stack[:, seen], axis=0)
    bg = np.clip(np.round(med), 0, 255).astype(np.uint8)
    holes = ~seen
    if holes.any():
        if not seen.any():
            return np.full((h, w, 3), 127, np.uint8), holes
        # inpaint at <= 256 px (Telea is local: a smaller image fills big holes more smoothly), then upsample
        s = min(1.0, 256 / max(h, w))
        small = cv2.resize(bg, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        hs = cv2.resize(holes.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        hs = cv2.dilate(hs, np.ones((3, 3), np.uint8))
        filled = cv2.inpaint(small, hs, 9, cv2.INPAINT_TELEA)
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
        filled = cv2.GaussianBlur(filled, (0, 0), 1.5)
        bg[holes] = filled[holes]
    return bg, holes
