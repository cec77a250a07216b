"""Reading clips for evaluation (FFmpeg from imageio-ffmpeg) and the test split / resizing conventions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nerfvc.errors import InputError


def ffmpeg_exe() -> str:
    """Path of the static FFmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: str | Path) -> dict:
    """``width``, ``height``, ``fps``, ``num_frames`` of a clip (frames counted by decoding, via PyAV)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        n = sum(1 for _ in c.decode(video=0))
        return {"width": s.codec_context.width, "height": s.codec_context.height, "fps": fps, "num_frames": n}


def read_frames(path: str | Path, start: int = 0, count: int | None = None) -> np.ndarray:
    """Decode frames ``[start, start + count)`` of a clip as uint8 RGB ``(N, H, W, 3)``."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i < start:
                continue
            if count is not None and len(out) >= count:
                break
            out.append(f.to_ndarray(format="rgb24"))
    if not out:
        raise InputError(f"no frames in {path} from index {start}")
    return np.stack(out)


def test_split(num_frames: int, train_fraction: float = 0.8) -> tuple[int, int]:
    """``(start, count)`` of the test split: the last 20% of the frames (dataset convention)."""
    start = int(num_frames * train_fraction)
    return start, num_frames - start


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
