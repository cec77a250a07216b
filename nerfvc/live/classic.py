"""Classic-codec fallback for side-by-side comparison: x265 (HEVC) or SVT-AV1 through PyAV, zero delay.

Zero-delay settings: no B-frames, no lookahead, one frame thread, low-delay prediction structure, so each
input frame yields its packet immediately (checked: the first packet comes out for frame 0).
"""

from __future__ import annotations

import fractions
import logging
from typing import Literal

import av
import numpy as np

from nerfvc.errors import InputError

log = logging.getLogger(__name__)

CLASSIC_CODECS = {"x265": ("libx265", "hevc"), "svtav1": ("libsvtav1", "libdav1d")}


def _video_context(name: str, mode: Literal["r", "w"]) -> av.VideoCodecContext:
    """PyAV's codec context for ``name``, which must be a video codec."""
    ctx = av.CodecContext.create(name, mode)
    if not isinstance(ctx, av.VideoCodecContext):
        raise InputError(f"{name} is not a video codec")
    return ctx


class ClassicEncoder:
    """RGB frames → codec packets (bytes) at ``kbps``, frames scaled to ``size``×``size``."""

    def __init__(self, codec: str, kbps: float, fps: float, size: int = 256) -> None:
        if codec not in CLASSIC_CODECS:
            raise InputError(f"unknown classic codec {codec!r} (choose from {', '.join(CLASSIC_CODECS)})")
        self.codec, self.size = codec, int(size)
        keyint = max(1, round(2 * fps))
        ctx = _video_context(CLASSIC_CODECS[codec][0], "w")
        ctx.width = ctx.height = self.size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, 1000)
        ctx.framerate = fractions.Fraction(round(fps * 1000), 1000)
        ctx.bit_rate = int(kbps * 1000)
        if codec == "x265":
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "x265-params": (
                    f"log-level=error:keyint={keyint}:bframes=0:rc-lookahead=0:frame-threads=1:pools=1"
                ),
            }
        else:
            ctx.options = {"preset": "12", "svtav1-params": f"pred-struct=1:rc=2:lookahead=0:keyint={keyint}"}
        ctx.open()
        self._ctx = ctx
        self._n = 0
        self._fps = fps
        self._closed = False

    def encode(self, rgb: np.ndarray) -> list[bytes]:
        """Encode one frame; returns the packets it produced (one with zero-delay settings)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(self.size, self.size, "yuv420p")
        frame.pts = round(self._n * 1000 / self._fps)
        self._n += 1
        return [bytes(p) for p in self._ctx.encode(frame)]

    def close(self) -> None:
        """Flush the encoder (SVT-AV1 hangs at teardown without an end-of-stream)."""
        if not self._closed:
            self._closed = True
            try:
                self._ctx.encode(None)
            except Exception as e:
                log.debug("classic encoder flush: %s", e)


class ClassicDecoder:
    """Codec packets → RGB frames."""

    def __init__(self, codec: str) -> None:
        if codec not in CLASSIC_CODECS:
            raise InputError(f"unknown classic codec {codec!r}")
        self._ctx = _video_context(CLASSIC_CODECS[codec][1], "r")

    def decode(self, packet: bytes) -> list[np.ndarray]:
        """Decode one packet → the frames it completes (uint8 RGB)."""
        return [f.to_ndarray(format="rgb24") for f in self._ctx.decode(av.Packet(packet))]
