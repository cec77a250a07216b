"""Evaluation helpers: the FFmpeg binary (imageio-ffmpeg), the resizing convention, strict-JSON values, and
keeping scored sequences as lossless videos (``nerfvc eval --keep-videos``).

Clips are read with :mod:`nerfvc.io.video` (the one reader; it applies display rotation).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from nerfvc.errors import InputError
from nerfvc.fsutil import atomic_path


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


def write_lossless(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 RGB frames ``(N, H, W, 3)`` as FFV1 in Matroska (lossless, intra-only), atomically."""
    arr = np.ascontiguousarray(np.asarray(frames, np.uint8))
    h, w = arr.shape[1:3]
    with atomic_path(path) as tmp:
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
        cmd += ["-r", f"{fps:g}", "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", "-f", "matroska", str(tmp)]
        p = subprocess.run(cmd, input=arr.tobytes(), capture_output=True, check=False)
        if p.returncode != 0:
            why = " ".join(p.stderr.decode(errors="replace").split())[:300]
            raise InputError(f"cannot write {path}: {why}")


class VideoKeeper:
    """Keeps scored sequences as lossless videos ``videos/<size>/<system>-<i>.mkv`` (and the ground truth as
    ``ground_truth.mkv``) under a report directory; :meth:`index` is ``results.json``'s ``videos`` entry,
    the input of ``nerfvc mos build``. Every file is written as soon as its frames exist (no frames are
    held in memory)."""

    def __init__(self, root: str | Path, fps: float) -> None:
        self.root = Path(root)
        self.fps = float(fps)
        self._index: dict[str, dict] = {}

    def _entry(self, frames: np.ndarray) -> tuple[str, dict]:
        size = str(frames.shape[1])
        entry = self._index.setdefault(size, {"fps": self.fps, "frames": len(frames), "systems": {}})
        if len(frames) != entry["frames"]:
            raise ValueError(f"{len(frames)} frames at {size} px, expected {entry['frames']}")
        return size, entry

    def reference(self, frames: np.ndarray) -> None:
        """Keep the ground truth at its size."""
        size, entry = self._entry(frames)
        rel = f"videos/{size}/ground_truth.mkv"
        write_lossless(self.root / rel, frames, self.fps)
        entry["ground_truth"] = rel

    def add(self, system: str, label: str, kbps: float | None, frames: np.ndarray) -> None:
        """Keep one rate point of ``system``."""
        size, entry = self._entry(frames)
        points = entry["systems"].setdefault(system, [])
        rel = f"videos/{size}/{system}-{len(points)}.mkv"
        write_lossless(self.root / rel, frames, self.fps)
        points.append({"label": label, "kbps": kbps, "file": rel})

    def index(self) -> dict[str, dict]:
        """``{size: {fps, frames, ground_truth, systems: {name: [{label, kbps, file}]}}}``."""
        return self._index
