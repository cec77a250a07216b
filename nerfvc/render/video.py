"""Minimal H.264 mp4 writer (PyAV, yuv420p).

Local stand-in until ``nerfvc.io.video.write_video`` lands on main; the signature is the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Write uint8 RGB frames (H,W,3) (even sizes are padded to) an H.264 mp4; returns the frame count."""
    n = 0
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            h, w = frame.shape[:2]
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w + w % 2, h + h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
            if w % 2 or h % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n
