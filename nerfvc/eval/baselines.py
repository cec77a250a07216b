"""Classic-codec baselines through the FFmpeg binary of imageio-ffmpeg, plus freeze-frame and next-frame.

Every codec runs low-delay: one I-frame (the first), then only forward-predicted frames (no B-frames, no frame
reordering), 25 fps, constant-quality (CRF or fixed QP — bitrate targets overshoot badly at these rates). The
stream is written as a raw elementary stream (Annex-B for H.264/HEVC/VVC, low-overhead OBU for AV1), so the
bitrate is the real coded size with no container overhead: ``kbps = file bytes * 8 / (frames / fps) / 1000``.
Encoder banners that are not needed for decoding are switched off or stripped (x265 ``info=0``; x264's SEI
NAL units removed with the ``filter_units`` bitstream filter) so they do not count as video bits.

| codec | encoder | quality knob (range; floor) | low-delay settings |
|---|---|---|---|
| x265 | libx265, preset medium | CRF 0-51; 51 | ``bframes=0:keyint=100000:min-keyint=100000:scenecut=0`` |
| x264 | libx264, preset medium | CRF 0-51; 51 | same, SEI stripped |
| vvenc | libvvenc, preset fast | QP 0-63; 63 | ``PicReordering=0:DecodingRefreshType=0:GOPSize=8:``
|       |                       |              | ``IntraPeriod=256`` |
| svtav1 | libsvtav1, preset 8 | CRF 1-63; 63 | ``pred-struct=1`` (low delay), ``keyint=-1`` (one key frame) |

A codec's *floor* is its bitrate at the coarsest quantiser: it cannot go lower on that content and size.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nerfvc.errors import InputError
from nerfvc.eval.video import ffmpeg_exe
from nerfvc.fsutil import AtomicFile

FPS = 25.0


@dataclass(frozen=True)
class CodecSpec:
    """How to run one codec: encoder args (``{q}`` is the quality value), raw stream format, knob range."""

    name: str
    label: str
    fmt: str
    args: tuple[str, ...]
    q_name: str
    q_floor: int
    sweep: tuple[int, ...]


CODECS: dict[str, CodecSpec] = {
    "x265": CodecSpec(
        "x265",
        "HEVC (x265)",
        "hevc",
        (
            "-c:v", "libx265", "-preset", "medium", "-crf", "{q}", "-pix_fmt", "yuv420p",
            "-x265-params",
            "bframes=0:keyint=100000:min-keyint=100000:scenecut=0:open-gop=0:info=0:log-level=error",
        ),
        "crf", 51, (51, 47, 43, 38, 33),
    ),
    "x264": CodecSpec(
        "x264",
        "H.264 (x264)",
        "h264",
        (
            "-c:v", "libx264", "-preset", "medium", "-crf", "{q}", "-pix_fmt", "yuv420p",
            "-x264-params", "bframes=0:keyint=100000:min-keyint=100000:scenecut=0",
            "-bsf:v", "filter_units=remove_types=6",
        ),
        "crf", 51, (51, 47, 43, 38, 33),
    ),
    "vvenc": CodecSpec(
        "vvenc",
        "VVC (VVenC)",
        "vvc",
        (
            "-c:v", "libvvenc", "-preset", "fast", "-qp", "{q}", "-pix_fmt", "yuv420p10le",
            "-vvenc-params", "PicReordering=0:DecodingRefreshType=0:GOPSize=8:IntraPeriod=256",
        ),
        "qp", 63, (63, 57, 51, 45, 39),
    ),
    "svtav1": CodecSpec(
        "svtav1",
        "AV1 (SVT-AV1)",
        "obu",
        (
            "-c:v", "libsvtav1", "-preset", "8", "-crf", "{q}", "-pix_fmt", "yuv420p",
            "-svtav1-params", "pred-struct=1:keyint=-1",
        ),
        "crf", 63, (63, 58, 52, 46, 40),
    ),
}  # fmt: skip


@dataclass
class EncodeResult:
    """One encode + decode: the real stream size and the decoded frames."""

    codec: str
    size: tuple[int, int]
    q: int
    num_frames: int
    num_bytes: int
    kbps: float
    frames: np.ndarray = field(repr=False)
    encode_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def info(self) -> dict:
        """JSON-friendly description (no frames)."""
        return {
            "codec": self.codec,
            "width": self.size[0],
            "height": self.size[1],
            "q": self.q,
            "num_frames": self.num_frames,
            "bytes": self.num_bytes,
            "kbps": self.kbps,
            "encode_seconds": round(self.encode_seconds, 2),
            **self.extra,
        }


def bitrate_kbps(num_bytes: int, num_frames: int, fps: float = FPS) -> float:
    """Bitrate of a stream of ``num_bytes`` carrying ``num_frames`` at ``fps``."""
    return num_bytes * 8 / (num_frames / fps) / 1000.0


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    p = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if p.returncode != 0:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise InputError(f"ffmpeg failed ({' '.join(cmd[:8])} ...): {' | '.join(tail)}")
    return p.stdout


def decode_stream(path: Path, fmt: str, width: int, height: int) -> np.ndarray:
    """Decode a raw elementary stream to uint8 RGB frames ``(N, H, W, 3)``."""
    out = _run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            fmt,
            "-i",
            str(path),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]
    )
    n = len(out) // (width * height * 3)
    return np.frombuffer(out, np.uint8)[: n * width * height * 3].reshape(n, height, width, 3).copy()


def encode(
    frames: Sequence[np.ndarray] | np.ndarray,
    codec: str,
    q: int,
    *,
    fps: float = FPS,
    keep: str | Path | None = None,
) -> EncodeResult:
    """Encode uint8 RGB frames with ``codec`` at quality ``q`` (CRF or QP), decode, measure the real bitrate.

    ``keep``: a path to keep the elementary stream at (else it is written to a temporary directory).
    """
    if codec not in CODECS:
        raise InputError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    spec = CODECS[codec]
    arr = np.ascontiguousarray(np.asarray(frames, np.uint8))
    n, h, w = arr.shape[:3]
    if w % 2 or h % 2:
        raise InputError(f"frame size must be even for 4:2:0 codecs, got {w}x{h}")
    args = [a.replace("{q}", str(q)) for a in spec.args]
    kept = AtomicFile(keep) if keep else None  # the kept stream appears only once it decodes in full
    with tempfile.TemporaryDirectory(prefix="nerfvc-bl-") as td:
        path = kept.tmp if kept else Path(td) / f"stream.{spec.fmt}"
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        cmd += ["-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", *args, "-f", spec.fmt, str(path)]
        try:
            t0 = time.perf_counter()
            _run(cmd, stdin=arr.tobytes())
            dt = time.perf_counter() - t0
            nbytes = path.stat().st_size
            dec = decode_stream(path, spec.fmt, w, h)
            if len(dec) != n:
                raise InputError(f"{codec} q={q}: decoded {len(dec)} frames, expected {n}")
            if kept:
                kept.commit()
        finally:
            if kept:
                kept.discard()
    return EncodeResult(codec, (w, h), q, n, nbytes, bitrate_kbps(nbytes, n, fps), dec, dt)


def sweep(
    frames: np.ndarray, codec: str, qs: Sequence[int] | None = None, *, fps: float = FPS
) -> list[EncodeResult]:
    """Encode at each quality value (default: the codec's sweep, coarsest first: the first is the floor)."""
    return [encode(frames, codec, q, fps=fps) for q in (qs or CODECS[codec].sweep)]


def floor(frames: np.ndarray, codec: str, *, fps: float = FPS) -> EncodeResult:
    """The codec's lowest achievable bitrate on these frames: an encode at its coarsest quantiser."""
    return encode(frames, codec, CODECS[codec].q_floor, fps=fps)


def freeze_frame(frames: np.ndarray, *, codec: str = "x265", q: int = 23, fps: float = FPS) -> EncodeResult:
    """Freeze-frame baseline: the first frame coded once as an intra frame (``codec`` at ``q``) and held for
    the whole sequence. Cost = that one intra frame spread over the sequence's duration."""
    key = encode(frames[:1], codec, q, fps=fps)
    n = len(frames)
    held = np.repeat(key.frames[:1], n, axis=0)
    return EncodeResult(
        "freeze",
        key.size,
        q,
        n,
        key.num_bytes,
        bitrate_kbps(key.num_bytes, n, fps),
        held,
        key.encode_seconds,
        {"intra_codec": codec, "intra_bytes": key.num_bytes},
    )


def next_frame(frames: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Next-frame ceiling: frame ``i`` is "decoded" as GT frame ``i - 1`` (``previous`` for the first one) —
    a perfect picture, one frame late. No bitrate."""
    return np.concatenate([np.asarray(previous)[None], np.asarray(frames)[:-1]])
