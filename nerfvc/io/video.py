"""Video I/O with PyAV.

- :func:`probe` reads container metadata (fps, size, frame count, duration).
- :func:`read_frames` decodes uint8 RGB frames ``(H, W, 3)`` with their true presentation timestamps in
  seconds (variable-frame-rate input keeps its real timing; nothing is resampled);
  :func:`read_frame_range` returns frames by index as one array, :func:`count_frames` counts them exactly.
  This is the project's one video reader.
- Display rotation metadata (phone videos) is applied: frames come out upright, ``probe`` reports the
  upright size.
- :class:`VideoWriter` / :func:`write_video` write H.264 mp4 (yuv420p; odd sizes are cropped to even).

Anything that is not a readable video (missing file, not a video, truncated or corrupt) raises
:class:`~nerfvc.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nerfvc.errors import InputError
from nerfvc.fsutil import AtomicFile


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video's first video stream."""

    path: str
    width: int
    height: int
    fps: float  # average frame rate (frames / s)
    num_frames: int  # from the container when known, else estimated from duration × fps
    duration: float  # seconds
    codec: str
    rotation: int = 0  # display rotation applied to decoded frames (degrees counter-clockwise)


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (multiple of 90°, counter-clockwise) to an ``(H, W, 3)`` frame."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a video")
    try:
        container = av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{p}: not a readable video ({_short(e)})") from e
    if not container.streams.video:
        container.close()
        raise InputError(f"{p}: contains no video stream")
    return container


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Metadata of ``path``'s first video stream; :class:`InputError` if it is not a readable video."""
    container = _open(path)
    try:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        n = int(s.frames or 0)
        if n <= 0 and fps > 0:
            n = round(duration * fps)
        w, h = s.codec_context.width, s.codec_context.height
        if w <= 0 or h <= 0:
            raise InputError(f"{path}: video stream has no frame size")
        rotation = 0
        try:
            first = next(container.decode(s), None)
            rotation = round(first.rotation) if first is not None else 0
        except (av.error.FFmpegError, AttributeError, TypeError):
            rotation = 0
        if round(rotation / 90) % 2:
            w, h = h, w
        return VideoInfo(str(path), w, h, fps, n, duration, s.codec_context.name, rotation)
    finally:
        container.close()


def read_frames(
    path: str | os.PathLike, start: float = 0.0, max_frames: int | None = None
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(frame, t)``: uint8 RGB ``(H, W, 3)``, upright, and its presentation time (s) from the stream
    start.

    ``start`` is in seconds (frames with ``t < start`` are skipped); yields at most ``max_frames`` frames.
    A video that fails to decode before yielding any frame, or is cut off mid-stream (also when it ends
    before ``max_frames`` and before its declared length), raises :class:`InputError`.
    """
    for frame, t in _decode(path, start, max_frames):
        yield _rgb(frame), t


def read_frame_range(path: str | os.PathLike, first: int = 0, count: int | None = None) -> np.ndarray:
    """Frames ``[first, first + count)`` by decode index (all from ``first`` when ``count`` is None) as
    uint8 RGB ``(N, H, W, 3)``, upright; :class:`InputError` when there is none."""
    out: list[np.ndarray] = []
    for i, (frame, _) in enumerate(_decode(path)):
        if count is not None and len(out) >= count:
            break
        if i >= first:
            out.append(_rgb(frame))
    if not out:
        raise InputError(f"{path}: no frames from index {first}")
    return np.stack(out)


def count_frames(path: str | os.PathLike) -> int:
    """The number of frames ``path`` decodes to (exact, unlike :attr:`VideoInfo.num_frames`)."""
    return sum(1 for _ in _decode(path))


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as upright uint8 RGB ``(H, W, 3)`` (display rotation applied)."""
    img = frame.to_ndarray(format="rgb24")
    rot = getattr(frame, "rotation", 0) or 0
    return _upright(img, round(rot)) if rot else img


def _decode(
    path: str | os.PathLike, start: float = 0.0, max_frames: int | None = None
) -> Iterator[tuple[av.VideoFrame, float]]:
    """The one decoding loop: ``(frame, t)`` as described in :func:`read_frames`, frames not converted."""
    container = _open(path)
    n = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 1)
        t0 = stream.start_time if stream.start_time is not None else None
        if start > 0:
            try:
                container.seek(int(start / tb) + (t0 or 0), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                container.seek(0, stream=stream)
        last_t = -math.inf
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    return
                if frame.pts is None:
                    t = last_t + (1.0 / float(stream.average_rate or 25)) if n else 0.0
                else:
                    t = float((frame.pts - (t0 or 0)) * tb)
                if t < start - 1e-6:
                    continue
                last_t = t
                n += 1
                yield frame, t
        except av.error.FFmpegError as e:
            raise InputError(f"{path}: corrupt or truncated video after {n} frames ({_short(e)})") from e
        if n == 0 and start <= 0:
            raise InputError(f"{path}: no decodable video frames (empty or truncated file)")
        # A cut-off file often decodes "successfully" but ends early: compare with the declared length
        # (with ``max_frames``, a file that ends before it and before its declared length is cut off too).
        declared = int(stream.frames or 0)
        wanted = declared if max_frames is None else min(max_frames, declared)
        if start <= 0 and declared and n < wanted and n < 0.9 * declared:
            raise InputError(f"{path}: truncated video: decoded {n} of {declared} frames")
    finally:
        container.close()


class VideoWriter:
    """Write RGB frames to an H.264 mp4 (yuv420p). Use as a context manager or call :meth:`close`.

    Frames must all have the size of the first one; odd widths/heights are cropped to even (yuv420p).
    The video is written to a temporary file next to ``path`` that replaces ``path`` on :meth:`close`; an
    exception inside the ``with`` block (or :meth:`abort`) leaves an existing ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, codec: str = "libx264"):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.codec = codec
        self._out = AtomicFile(self.path)
        self._container: av.container.OutputContainer | None
        try:
            self._container = av.open(str(self._out.tmp), "w")
        except (av.error.FFmpegError, ValueError) as e:
            self._out.discard()
            raise InputError(f"{path}: cannot write a video there ({_short(e)})") from e
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame ``(H, W, 3)``."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
        if self._container is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._stream is None:
            stream = self._container.add_stream(self.codec, rate=self.fps)
            if not isinstance(stream, av.video.stream.VideoStream):
                raise ValueError(f"{self.codec} is not a video codec")
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": "medium"}
            self._stream = stream
            self._size = (h, w)
        elif (h, w) != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._size}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder, close the file and move it to ``path``."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            self._out.commit()
        finally:
            self._container = None
            self._out.discard()

    def abort(self) -> None:
        """Drop what was written; ``path`` keeps its previous content (if any)."""
        if self._container is None:
            return
        try:
            self._container.close()
        except av.error.FFmpegError:
            pass  # the partial file is discarded anyway
        finally:
            self._container = None
            self._out.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Write uint8 RGB frames ``(H, W, 3)`` to an H.264 mp4; returns the number of frames written."""
    n = 0
    with VideoWriter(path, fps, crf=crf) as w:
        for f in frames:
            w.write(f)
            n += 1
    return n
