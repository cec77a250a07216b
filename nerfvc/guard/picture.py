"""Fallback pictures: a low-resolution, classic-coded picture of the camera frame that the receiver shows
(blended with the render) while the guard fires.

A picture is the camera frame (cropped to the model camera, the frame the receiver renders) shrunk to
``size`` pixels on its longer side and coded as a still image. Codecs (chosen by ``benchmarks/guard.py``,
docs/guard.md): ``hevc`` (x265 intra via PyAV, parameter sets included), ``webp`` and ``jpeg`` (OpenCV).
The payload starts with one byte: the codec id; the decoder reads the size from the coded image.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

from nerfvc.errors import BitstreamError, InputError

CODECS = {"hevc": 1, "webp": 2, "jpeg": 3}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
MAX_PICTURE_SIDE = 256
MAX_PICTURE_BYTES = 16384


def shrink(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H,W,3) → longer side ``size`` (even sides, INTER_AREA)."""
    h, w = frame.shape[:2]
    s = size / max(h, w)
    nw, nh = max(2, 2 * round(w * s / 2)), max(2, 2 * round(h * s / 2))
    return cv2.resize(np.ascontiguousarray(frame), (nw, nh), interpolation=cv2.INTER_AREA)


def upsample(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """A decoded picture → (height, width, 3) uint8, bicubic."""
    if picture.shape[:2] == (height, width):
        return picture
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_CUBIC)


_PARAM_SETS: dict[tuple[int, int, int], bytes] = {}
_NAL_PARAM_SETS = (32, 33, 34)  # VPS, SPS, PPS


def _nal_units(data: bytes) -> list[bytes]:
    """Annex-B byte stream → NAL units (without start codes)."""
    return [n for n in (p.rstrip(b"\x00") for p in data.split(b"\x00\x00\x01")) if n]


def _param_sets(w: int, h: int, q: int) -> bytes:
    """The VPS/SPS/PPS x265 writes for a ``w``×``h`` intra picture at QP ``q`` (identical for every picture
    of those settings, so they are not sent: both ends derive them)."""
    key = (w, h, q)
    if key not in _PARAM_SETS:
        data = _hevc_encode_raw(np.zeros((h, w, 3), np.uint8), q)
        nals = [n for n in _nal_units(data) if (n[0] >> 1) & 63 in _NAL_PARAM_SETS]
        _PARAM_SETS[key] = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    return _PARAM_SETS[key]


def _hevc_encode(img: np.ndarray, q: int) -> bytes:
    """x265 intra picture → ``w/2, h/2, qp`` bytes + its slice NAL units (parameter sets stripped)."""
    h, w = img.shape[:2]
    data = _hevc_encode_raw(img, q)
    nals = [n for n in _nal_units(data) if (n[0] >> 1) & 63 not in _NAL_PARAM_SETS]
    return bytes([w // 2, h // 2, q]) + b"".join(b"\x00\x00\x01" + n for n in nals)


def _hevc_encode_raw(img: np.ndarray, q: int) -> bytes:
    import av

    h, w = img.shape[:2]
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"x265-params": f"log-level=none:keyint=1:qp={int(q)}:info=0", "preset": "medium"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(frame))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    return data


def _hevc_decode(data: bytes) -> np.ndarray:
    import av

    if (
        len(data) < 4
        or not 1 <= data[0] <= MAX_PICTURE_SIDE // 2
        or not 1 <= data[1] <= MAX_PICTURE_SIDE // 2
    ):
        raise BitstreamError("corrupt fallback picture (bad size)")
    if not 0 <= data[2] <= 51:
        raise BitstreamError("corrupt fallback picture (bad QP)")
    stream = _param_sets(2 * data[0], 2 * data[1], data[2]) + data[3:]
    ctx = av.CodecContext.create("hevc", "r")
    try:
        frames = list(ctx.decode(av.Packet(stream)))
        frames += ctx.decode(None)
    except (av.error.FFmpegError, ValueError) as e:
        raise BitstreamError(f"corrupt fallback picture ({e})") from e
    if not frames:
        raise BitstreamError("corrupt fallback picture (no frame decoded)")
    return frames[-1].to_ndarray(format="rgb24")


def encode_picture(frame: np.ndarray, size: int = 64, codec: str = "hevc", quality: int = 40) -> bytes:
    """Camera frame (H,W,3) uint8 → fallback picture payload (codec id byte + coded image).

    ``quality``: the x265 QP for hevc (lower is better), the 0-100 quality for webp/jpeg."""
    if codec not in CODECS or (codec == "hevc" and not 0 <= quality <= 51):
        raise InputError(f"unknown picture codec {codec!r}; choose from {', '.join(CODECS)}")
    if not 8 <= size <= MAX_PICTURE_SIDE:
        raise InputError(f"picture size must be in 8..{MAX_PICTURE_SIDE}, got {size}")
    img = shrink(np.asarray(frame, np.uint8), size)
    if codec == "hevc":
        data = _hevc_encode(img, quality)
    else:
        ext, flag = (
            (".webp", cv2.IMWRITE_WEBP_QUALITY) if codec == "webp" else (".jpg", cv2.IMWRITE_JPEG_QUALITY)
        )
        ok, buf = cv2.imencode(ext, img[..., ::-1], [flag, int(quality)])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
            raise InputError(f"{codec}: could not encode the picture")
        data = buf.tobytes()
    out = bytes([CODECS[codec]]) + data
    if len(out) > MAX_PICTURE_BYTES:
        raise InputError(f"fallback picture of {len(out)} bytes is too large (at most {MAX_PICTURE_BYTES})")
    return out


def decode_picture(payload: bytes) -> np.ndarray:
    """Fallback picture payload → uint8 RGB (h,w,3); :class:`BitstreamError` if it is not a picture."""
    if len(payload) < 2 or payload[0] not in CODEC_NAMES:
        raise BitstreamError("corrupt fallback picture (unknown codec)")
    codec, data = CODEC_NAMES[payload[0]], bytes(payload[1:])
    if codec == "hevc":
        img = _hevc_decode(data)
    else:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BitstreamError("corrupt fallback picture (does not decode)")
        img = np.ascontiguousarray(bgr[..., ::-1])
    if img.ndim != 3 or max(img.shape[:2]) > MAX_PICTURE_SIDE or min(img.shape[:2]) < 2:
        raise BitstreamError("corrupt fallback picture (bad size)")
    return img
