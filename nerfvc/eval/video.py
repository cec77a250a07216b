"""Evaluation helpers: the FFmpeg binary (imageio-ffmpeg), the resizing convention, strict-JSON values.

Clips are read with :mod:`nerfvc.io.video` (the one reader; it applies display rotation).
"""

from __future__ import annotations

import cv2
import numpy as np


def ffmpeg_exe() -> str:
    """Path of the static FFmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Square ``size`` x ``size`` frames: INTER_AREA when shrinking, bicubic when enlarging (the 1024 px set
    is an upscale of the 512 px source, it has no more detail)."""
    h, w = frames.shape[1:3]
    if (h, w) == (size, size):
        return frames
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def to_jsonable(obj):
    """Recursively convert numpy scalars/arrays to Python; NaN → None, ±inf → "inf"/"-inf" (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj
