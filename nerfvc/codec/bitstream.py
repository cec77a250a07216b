"""The ``.nvc`` bitstream: header + self-delimiting per-frame packets (format in docs/bitstream.md).

Per-packet API for the live call (:class:`StreamEncoder`, :class:`StreamDecoder`) and file-level helpers
(:func:`encode_stream`, :func:`decode_stream`), and rate control: :func:`choose_step_index`, the finest step
whose real coded size fits a target rate.
"""

from __future__ import annotations

import binascii
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import zstandard

from nerfvc.codec.coder import decode_frames, encode_frames, model_pair, push_history, rdo_quantize
from nerfvc.codec.entropy import expected_bin_bits
from nerfvc.codec.tables import (
    POSE_DIM,
    STEP_INDEX_MAX,
    STEP_INDEX_MIN,
    CodecTables,
    index_from_step,
    step_from_index,
)
from nerfvc.errors import BitstreamError, InputError, ModelMismatchError
from nerfvc.features import upsample_features

MAGIC = b"NVCF"
VERSION = 4  # 2: indices centred on the training mean; 3: CRC-16 delta packets, compact group headers;
# 4: a frame step (every m-th camera frame coded; the receiver interpolates) in the header's byte 20
READABLE_VERSIONS = (3, 4)
MODE_NERFVC = 0  # predicted + range coded (this codec)
MODE_PAPER = 1  # fp16 features + zstd per packet (the seed paper's scheme, for comparison)
_HEADER = struct.Struct(">4sBB8sIHBbHI")  # magic ver mode fp fps_milli D layout step keyint nframes
MAX_FRAME_STEP = 8  # the header's frame layout byte: (frame step - 1) << 4 | tail, tail < frame step
AUTO_FRAME_STEPS = (1, 2, 3, 4)  # frame steps the rate control tries (benchmarks/rate_render.py)
# The rate control codes every frame while that fits the target at a quality multiplier Q at most this; past
# it, coding every m-th frame at a finer Q renders better (benchmarks/results/rate_render.json)
FRAME_STEP_ABOVE_Q = 2.0
HEADER_SIZE = _HEADER.size + 4  # + CRC32
TYPE_DELTA, TYPE_KEY, TYPE_PAPER = 0, 1, 2
TYPE_FALLBACK = 3  # a fallback picture / blend state for the receiver (nerfvc.guard), not features
FALLBACK_BYTE = 0xC8
MAX_FALLBACK_PAYLOAD = 16385  # a fallback picture (codec byte + at most 16 KiB)
MAX_GROUP = 8  # frames per packet
MAX_PAYLOAD = 1 << 16
DELTA_SEARCH = 8  # a delta packet is looked for up to 8 * 8 frames after the newest one
MAX_KEYINT = 1 << 14
MIN_FPS, MAX_FPS = 1.0, 240.0  # header frame rate range (fps)
FRAMES_PER_BYTE = 2  # the most frames a stream's packet bytes can hold (empty 8-frame groups, 4 bytes each)
TRUNCATED_SLACK = 256  # frames a file's header may claim beyond that (a truncated tail is concealed)
_ZSTD_LEVEL = 19


def _fp_bytes(fingerprint: str) -> bytes:
    try:
        b = bytes.fromhex(fingerprint)
    except (ValueError, TypeError) as e:
        raise InputError(f"model fingerprint must be 16 hex digits, got {fingerprint!r}") from e
    if len(b) != 8:
        raise InputError(f"model fingerprint must be 16 hex digits, got {fingerprint!r}")
    return b


def _crc(fp: bytes, data: bytes) -> int:
    """Packet CRC32, seeded with the model fingerprint so a packet of another model's stream fails it."""
    return zlib.crc32(data, zlib.crc32(fp))


def uvarint(n: int) -> bytes:
    """Unsigned LEB128 varint of ``n``."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_uvarint(buf: bytes, pos: int, max_bytes: int = 3) -> tuple[int, int]:
    """``(value, next position)`` of the varint at ``buf[pos]``; :class:`BitstreamError` if malformed."""
    n = shift = 0
    for i in range(max_bytes):
        if pos + i >= len(buf):
            raise BitstreamError("truncated packet (length field)")
        byte = buf[pos + i]
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos + i + 1
    raise BitstreamError("bad packet length field")


@dataclass(frozen=True)
class StreamHeader:
    """Stream-level parameters (the first ``HEADER_SIZE`` bytes of a stream)."""

    fingerprint: str  # 16 hex digits of the MODEL directory
    fps: float  # camera (display) frame rate
    code_dim: int  # D
    step_index: int  # initial step index (keyframes carry their own)
    keyframe_interval: int  # in coded frames
    num_frames: int = 0  # coded frames; 0 = unknown (live)
    mode: int = MODE_NERFVC
    version: int = VERSION
    frame_step: int = 1  # coded frame i is camera frame i · frame_step (version 4)
    tail: int = 0  # camera frames after the last coded one (< frame_step), which hold it

    @property
    def pose_dim(self) -> int:
        return POSE_DIM if self.mode == MODE_NERFVC else 12

    @property
    def coded_fps(self) -> float:
        """Rate of the coded frames (``fps / frame_step``)."""
        return self.fps / self.frame_step

    @property
    def display_frames(self) -> int:
        """Camera frames the coded ones stand for (0 = unknown)."""
        return (self.num_frames - 1) * self.frame_step + 1 + self.tail if self.num_frames else 0

    def _layout(self) -> int:
        """Byte 20: the pose dim (version 3) or ``(frame_step - 1) << 4 | tail`` (version 4)."""
        return self.pose_dim if self.version < 4 else (self.frame_step - 1) << 4 | self.tail

    def to_bytes(self) -> bytes:
        body = _HEADER.pack(
            MAGIC,
            self.version,
            self.mode,
            _fp_bytes(self.fingerprint),
            round(self.fps * 1000),
            self.code_dim,
            self._layout(),
            self.step_index,
            self.keyframe_interval,
            self.num_frames,
        )
        return body + struct.pack(">I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamHeader:
        """Parse and check a header; raises :class:`BitstreamError` naming the problem."""
        if len(data) == 0:
            raise BitstreamError("empty stream (0 bytes)")
        if data[: min(4, len(data))] != MAGIC[: min(4, len(data))]:
            raise BitstreamError("not a nerfvc stream (bad magic; expected 'NVCF')")
        if len(data) < 5:
            raise BitstreamError(f"truncated header ({len(data)} of {HEADER_SIZE} bytes)")
        if data[4] not in READABLE_VERSIONS:
            raise BitstreamError(
                f"unsupported bitstream version {data[4]} (this decoder reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
            )
        if len(data) < HEADER_SIZE:
            raise BitstreamError(f"truncated header ({len(data)} of {HEADER_SIZE} bytes)")
        body = data[: _HEADER.size]
        (crc,) = struct.unpack(">I", data[_HEADER.size : HEADER_SIZE])
        if zlib.crc32(body) != crc:
            raise BitstreamError("corrupt header (CRC mismatch)")
        _, ver, mode, fp, fps_milli, dim, layout, step, keyint, nframes = _HEADER.unpack(body)
        if mode not in (MODE_NERFVC, MODE_PAPER):
            raise BitstreamError(f"unknown coding mode {mode} in header")
        frame_step, tail = ((layout >> 4) + 1, layout & 15) if ver >= 4 else (1, 0)
        h = cls(fp.hex(), fps_milli / 1000, dim, step, keyint, nframes, mode, ver, frame_step, tail)
        if h._layout() != layout or tail >= frame_step or not 1 <= keyint <= MAX_KEYINT:
            raise BitstreamError("corrupt header (inconsistent fields)")
        if frame_step > MAX_FRAME_STEP or (mode == MODE_PAPER and frame_step > 1):
            raise BitstreamError(f"corrupt header (frame step {frame_step})")
        if not MIN_FPS <= h.fps <= MAX_FPS:
            raise BitstreamError(f"corrupt header (frame rate {h.fps:g} not in {MIN_FPS:g}..{MAX_FPS:g})")
        if not STEP_INDEX_MIN <= step <= STEP_INDEX_MAX:
            raise BitstreamError(f"corrupt header (step index {step} out of range)")
        return h


@dataclass
class Packet:
    """One parsed packet."""

    index: int  # (first) frame index, recovered in full via the CRC for delta packets
    kind: int  # TYPE_DELTA, TYPE_KEY (first frame is a keyframe), TYPE_PAPER or TYPE_FALLBACK
    step_index: int  # keyframes only (0 otherwise); the blend weight 0..255 of a fallback packet
    payload: bytes
    size: int  # bytes on the wire
    count: int = 1  # frames in the packet (consecutive indices)


def build_packet(
    fp: bytes, kind: int, index: int, payload: bytes, step_index: int = 0, count: int = 1
) -> bytes:
    """Serialize a packet (see docs/bitstream.md).

    Delta, 1 frame: ``0ppp llll`` (index mod 8, payload length < 15 or 15 + uvarint), payload, CRC-16.
    Delta, G = 2…8 frames: ``10gg gppp`` (G − 2, index mod 8), uvarint length, payload, CRC-16.
    Key (first of G = 1…8 frames a keyframe): ``0xD0 | G−1``, index u32, step index i8, uvarint length,
    payload, CRC32. Paper: ``0xC0``, index u32, uvarint length, payload, CRC32. Fallback: ``0xC8``, index
    u32, blend weight u8 (``step_index``), uvarint length, payload (a picture or empty), CRC32. Every check
    covers the
    model fingerprint, the full 32-bit (first) frame index and the packet bytes before it.
    """
    if len(payload) >= MAX_PAYLOAD:
        raise ValueError("payload too large")
    if kind == TYPE_FALLBACK and (len(payload) >= MAX_FALLBACK_PAYLOAD or not 0 <= step_index <= 255):
        raise ValueError("bad fallback packet")
    if not 1 <= count <= MAX_GROUP or (count > 1 and kind in (TYPE_PAPER, TYPE_FALLBACK)):
        raise ValueError("bad frame count")
    index &= 0xFFFFFFFF
    n = len(payload)
    if kind == TYPE_DELTA and count > 1:
        head = bytes([0x80 | (count - 2) << 3 | (index & 7)]) + uvarint(n)
    elif kind == TYPE_DELTA:
        head = bytes([(index & 7) << 4 | min(n, 15)]) + (uvarint(n - 15) if n >= 15 else b"")
    elif kind == TYPE_KEY:
        head = struct.pack(">BIb", 0xD0 | (count - 1), index, step_index) + uvarint(n)
    elif kind == TYPE_FALLBACK:
        head = struct.pack(">BIB", FALLBACK_BYTE, index, step_index) + uvarint(n)
    else:
        head = struct.pack(">BI", 0xC0, index) + uvarint(n)
    body = head + payload
    return body + _check(fp, index, body, kind)


def _check(fp: bytes, index: int, body: bytes, kind: int) -> bytes:
    """The packet's trailing check: CRC-16 for delta packets, CRC32 for key, paper and fallback packets."""
    data = struct.pack(">I", index) + body
    if kind == TYPE_DELTA:
        return struct.pack(">H", binascii.crc_hqx(data, binascii.crc_hqx(fp, 0xFFFF)))
    return struct.pack(">I", _crc(fp, data))


def delta_index_candidates(low: int, next_index: int, ahead: int = DELTA_SEARCH, mod: int = 8) -> list[int]:
    """Full indices a delta packet with ``index % mod == low`` may have, nearest to ``next_index`` first
    (up to ``mod * ahead`` frames ahead and 32 back)."""
    base = next_index + ((low - next_index) % mod)
    out = [base + mod * j for j in range(max(1, ahead))]
    out += [base - mod * j for j in range(1, 32 // mod + 1) if base - mod * j >= 0]
    return [i for i in out if i <= 0xFFFFFFFF]


def parse_packet(
    fp: bytes,
    buf: bytes,
    pos: int = 0,
    max_payload: int = MAX_PAYLOAD,
    next_index: int = 0,
    search: int = DELTA_SEARCH,
) -> Packet:
    """Parse the packet at ``buf[pos:]``; raises :class:`BitstreamError` if it is truncated or corrupt.

    A delta packet's full index is the candidate (nearest to ``next_index``, up to ``8 * search`` frames
    ahead) whose CRC checks. ``max_payload`` bounds the payload per frame.
    """
    if pos >= len(buf):
        raise BitstreamError("truncated packet (no bytes)")
    b0 = buf[pos]
    step = 0
    index = 0
    count = 1
    low = 0
    if b0 < 0x80:
        kind = TYPE_DELTA
        low = b0 >> 4
        n, p = b0 & 15, pos + 1
        if n == 15:
            n, p = read_uvarint(buf, p)
            n += 15
    elif b0 < 0xB8:
        kind = TYPE_DELTA
        count, low = ((b0 >> 3) & 7) + 2, b0 & 7
        n, p = read_uvarint(buf, pos + 1)
    elif 0xD0 <= b0 < 0xD0 + MAX_GROUP or b0 == 0xC0:
        kind = TYPE_PAPER if b0 == 0xC0 else TYPE_KEY
        hsize = 6 if kind == TYPE_KEY else 5
        if pos + hsize > len(buf):
            raise BitstreamError("truncated packet (header)")
        if kind == TYPE_KEY:
            _, index, step = struct.unpack_from(">BIb", buf, pos)
            count = (b0 & 15) + 1
        else:
            _, index = struct.unpack_from(">BI", buf, pos)
        n, p = read_uvarint(buf, pos + hsize)
    elif b0 == FALLBACK_BYTE:
        kind = TYPE_FALLBACK
        if pos + 6 > len(buf):
            raise BitstreamError("truncated packet (header)")
        _, index, step = struct.unpack_from(">BIB", buf, pos)
        n, p = read_uvarint(buf, pos + 6)
    else:
        raise BitstreamError(f"bad packet type byte 0x{b0:02x}")
    if n >= (MAX_FALLBACK_PAYLOAD if kind == TYPE_FALLBACK else min(max_payload * count, MAX_PAYLOAD)):
        raise BitstreamError("bad packet length field")
    end = p + n
    csize = 2 if kind == TYPE_DELTA else 4
    if end + csize > len(buf):
        raise BitstreamError("truncated packet (payload)")
    check = bytes(buf[end : end + csize])
    body = bytes(buf[pos:end])
    cands = delta_index_candidates(low, next_index, search) if kind == TYPE_DELTA else [index]
    for idx in cands:
        if _check(fp, idx, body, kind) == check:
            return Packet(idx, kind, step, bytes(buf[p:end]), end + csize - pos, count)
    raise BitstreamError("corrupt packet (CRC mismatch)")


def _paper_payload(code: np.ndarray, pose: np.ndarray) -> bytes:
    raw = np.concatenate([np.asarray(code, np.float32), np.asarray(pose, np.float32)]).astype(">f2").tobytes()
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw)


def _paper_unpayload(payload: bytes, d: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=(d + 12) * 2)
    except zstandard.ZstdError as e:
        raise BitstreamError(f"corrupt paper-mode payload ({e})") from e
    if len(raw) != (d + 12) * 2:
        raise BitstreamError("corrupt paper-mode payload (wrong size)")
    v = np.frombuffer(raw, ">f2").astype(np.float32)
    return v[:d], v[d:]


# -- encoder ---------------------------------------------------------------------------------------------
class StreamEncoder:
    """Per-packet encoder: ``header()`` once, then ``encode(code, pose)`` → one packet per frame.

    ``step`` fixes the quality multiplier (rounded to the 2**(k/16) grid); ``kbps`` starts at step 1 and
    adapts live (:meth:`adapt`, applied at keyframes). ``mode="paper"`` sends fp16 + zstd packets instead.
    ``rdoq > 0`` enables rate-distortion optimized quantization (encoder-only; error < 1 step instead of
    1/2 step; ``last_reconstruction`` is then what the decoder outputs).
    ``frames_per_packet`` G > 1 packs G consecutive frames per packet (one range-coded payload, one CRC:
    less framing, G-1 frames more latency): ``encode`` then returns ``b""`` until a packet is complete;
    call :meth:`flush` at the end. Keyframes then start at packet boundaries.
    ``frame_step`` m > 1 declares that the caller codes every m-th camera frame (``fps`` stays the camera
    rate; ``tail``: camera frames after the last coded one, for a file); rates and the default keyframe
    interval (2 s) then count coded frames at ``fps / m``.
    """

    def __init__(
        self,
        tables: CodecTables,
        fingerprint: str,
        fps: float = 25.0,
        step: float | None = None,
        kbps: float | None = None,
        keyframe_interval: int | None = None,
        mode: str = "nerfvc",
        num_frames: int = 0,
        step_index: int | None = None,
        rdoq: float = 0.0,
        frames_per_packet: int = 1,
        frame_step: int = 1,
        tail: int = 0,
    ) -> None:
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InputError(f"fps must be in {MIN_FPS:g}..{MAX_FPS:g}, got {fps}")
        if not 1 <= frame_step <= MAX_FRAME_STEP or not 0 <= tail < frame_step:
            raise InputError(f"frame step must be in 1..{MAX_FRAME_STEP} (tail below it), got {frame_step}")
        if frame_step > 1 and mode == "paper":
            raise InputError("paper mode codes every frame (frame step 1)")
        self.frame_step, self.tail = int(frame_step), int(tail)
        self.tables = tables
        self.fingerprint = fingerprint
        self._fp = _fp_bytes(fingerprint)
        self.fps = float(fps)
        self.mode = MODE_PAPER if mode == "paper" else MODE_NERFVC
        if mode not in ("nerfvc", "paper"):
            raise InputError(f"unknown codec mode {mode!r}")
        if step_index is None:
            step_index = index_from_step(step) if step is not None else 0
        self.step_index = int(np.clip(step_index, STEP_INDEX_MIN, STEP_INDEX_MAX))
        self.target_kbps = kbps
        keyint = keyframe_interval if keyframe_interval is not None else max(1, round(2 * fps / frame_step))
        if not 1 <= keyint <= MAX_KEYINT:
            raise InputError(f"keyframe interval must be in [1, {MAX_KEYINT}], got {keyint}")
        self.keyframe_interval = int(keyint)
        self.num_frames = int(num_frames)
        self.rdoq = float(rdoq)
        if not 1 <= frames_per_packet <= MAX_GROUP or (frames_per_packet > 1 and mode == "paper"):
            raise InputError(f"frames per packet must be in [1, {MAX_GROUP}] (1 in paper mode)")
        self.frames_per_packet = int(frames_per_packet)
        self._group: list[np.ndarray] = []  # (K,) indices of the frames buffered for the next packet
        self._group_key = False
        self._group_ref: list[np.ndarray] | None = None
        self.index = 0  # next frame index
        self._since_key = 0
        self._force_key = True
        self._q_prev: list[np.ndarray] | None = None  # previous decoded indices, newest first
        self._models = model_pair(tables, self.step_index)
        self._pending_step: int | None = None
        self._ema_bits: float | None = None
        self.last_reconstruction: tuple[np.ndarray, np.ndarray] | None = None  # what the decoder will output

    def header(self) -> bytes:
        """The stream header (send first; the live transport sends it at call start)."""
        return StreamHeader(
            self.fingerprint,
            self.fps,
            self.tables.code_dim,
            self.step_index,
            self.keyframe_interval,
            self.num_frames,
            self.mode,
            frame_step=self.frame_step,
            tail=self.tail,
        ).to_bytes()

    def fallback(self, index: int, alpha: int, picture: bytes = b"") -> bytes:
        """A fallback packet (docs/guard.md): from frame ``index`` on, the receiver shows its held picture —
        ``picture`` (a :func:`nerfvc.guard.picture.encode_picture` payload) if given — blended over the
        render with weight ``alpha``/255 (0: the render alone). Carries no features; send it before the
        frame's feature packet. Its bits count in the stream's rate like any other packet."""
        return build_packet(self._fp, TYPE_FALLBACK, index, bytes(picture), int(alpha))

    def request_keyframe(self) -> None:
        """Make the next packet a keyframe (e.g. the receiver reported loss)."""
        self._force_key = True

    def set_step_index(self, k: int) -> None:
        """Change the quality; takes effect at the next keyframe (delta frames keep their chain's step)."""
        self._pending_step = int(np.clip(k, STEP_INDEX_MIN, STEP_INDEX_MAX))

    def adapt(self, packet_bits: float) -> None:
        """Live rate-control hook, fed each packet's bits per frame (``encode`` does it when ``kbps`` is set).

        Keeps an EMA of the rate and, outside a ±5% band around the target, schedules a step change
        proportional to the log ratio (at most ±4/16 octave), applied at the next keyframe.
        """
        if not self.target_kbps:
            return
        self._ema_bits = packet_bits if self._ema_bits is None else 0.9 * self._ema_bits + 0.1 * packet_bits
        target = self.target_kbps * 1000 * self.frame_step / self.fps  # bits per coded frame
        ratio = self._ema_bits / max(target, 1e-9)
        if 0.95 <= ratio <= 1.05:
            self._pending_step = None
            return
        delta = int(np.clip(round(32 * math.log2(ratio)), -4, 4)) or (1 if ratio > 1 else -1)
        self.set_step_index(self.step_index + delta)

    def flush(self) -> bytes:
        """Emit the frames buffered for an incomplete packet (``frames_per_packet`` > 1), else ``b""``."""
        if not self._group:
            return b""
        n = len(self._group)
        key_m, delta_m = self._models
        models = [key_m if self._group_key else delta_m] + [delta_m] * (n - 1)
        payload = encode_frames(models, self._group, None if self._group_key else self._group_ref)
        kind = TYPE_KEY if self._group_key else TYPE_DELTA
        pkt = build_packet(self._fp, kind, self.index - n, payload, self.step_index, count=n)
        self._group = []
        if self.target_kbps:
            self.adapt(8 * len(pkt) / n)
        return pkt

    def encode(self, code: np.ndarray, pose: np.ndarray, force_key: bool = False) -> bytes:
        """Code one frame: ``code (D,)``, ``pose (12,)`` → one self-contained packet (or ``b""`` while a
        multi-frame packet is being filled)."""
        code = np.asarray(code, dtype=np.float64).reshape(-1)
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        vec = self.tables.features_to_vec(code, pose)  # checks dims and finiteness
        index = self.index
        if self.mode == MODE_PAPER:
            pkt = build_packet(self._fp, TYPE_PAPER, index, _paper_payload(code, pose))
            c16 = code.astype(np.float16).astype(np.float32)
            self.last_reconstruction = (c16, pose.astype(np.float16).astype(np.float32))
        else:
            if force_key:
                self._force_key = True
            key = (self._force_key or self._since_key >= self.keyframe_interval) and not self._group
            if key and self._pending_step is not None:
                if self._pending_step != self.step_index:
                    self.step_index = self._pending_step
                    self._models = model_pair(self.tables, self.step_index)
                self._pending_step = None
            if self.rdoq > 0:
                m = self._models[0] if key else self._models[1]
                xs = (vec - self.tables.mean) / self.tables.steps(self.step_index)
                q = rdo_quantize(m, xs, None if key else self._q_prev, self.rdoq)
            else:
                q = self.tables.quantize(vec, self.step_index)
            if self.frames_per_packet > 1:
                if not self._group:
                    self._group_key, self._group_ref = key, self._q_prev
                self._group.append(q)
                if key:
                    self._since_key = 0
                    self._force_key = False
                self._since_key += 1
                self._q_prev = push_history(None if key else self._q_prev, q)
                self.last_reconstruction = self.tables.vec_to_features(
                    self.tables.dequantize(q, self.step_index)
                )
                self.index += 1
                return self.flush() if len(self._group) == self.frames_per_packet else b""
            if key:
                payload = encode_frames([self._models[0]], [q], None)
                pkt = build_packet(self._fp, TYPE_KEY, index, payload, self.step_index)
                self._since_key = 0
                self._force_key = False
            else:
                payload = encode_frames([self._models[1]], [q], self._q_prev)
                pkt = build_packet(self._fp, TYPE_DELTA, index, payload)
            self._since_key += 1
            self._q_prev = push_history(None if key else self._q_prev, q)
            self.last_reconstruction = self.tables.vec_to_features(self.tables.dequantize(q, self.step_index))
        self.index += 1
        if self.target_kbps:
            self.adapt(8 * len(pkt))
        return pkt


# -- decoder ---------------------------------------------------------------------------------------------
@dataclass
class DecodedFrame:
    """One decoder output. ``concealed`` frames are predictions (the packet's reference was lost)."""

    index: int
    code: np.ndarray  # (D,) float32
    pose: np.ndarray  # (12,) float32
    is_key: bool
    concealed: bool
    late: bool = False  # the packet arrived after a newer one (its frame is in the past)


@dataclass
class FallbackPacket:
    """A decoded fallback packet: from frame ``index`` on, blend the held picture (``picture`` replaces it
    when not empty) over the render with weight ``alpha``/255."""

    index: int
    alpha: int  # 0..255
    picture: bytes  # a nerfvc.guard.picture payload, or b"" (keep the held one)
    size: int = 0  # bytes on the wire


@dataclass
class LossStats:
    """Counters kept by :class:`StreamDecoder`."""

    received: int = 0
    decoded: int = 0
    concealed: int = 0
    lost: int = 0  # frame indices never received (gaps)
    corrupt: int = 0  # packets rejected (CRC, parse or payload errors)
    late: int = 0


class StreamDecoder:
    """Per-packet decoder. Packets may arrive lost, damaged or out of order; decoding resumes at keyframes."""

    def __init__(self, tables: CodecTables, fingerprint: str) -> None:
        self.tables = tables
        self.fingerprint = fingerprint
        self._fp = _fp_bytes(fingerprint)
        self.header: StreamHeader | None = None
        self.stats = LossStats()
        self._models: dict[int, tuple] = {}
        self._q_prev: list[np.ndarray] | None = None  # last decoded indices, newest first (None: none)
        self._step_index = 0
        self._last_index = -1  # newest frame index seen
        self._last_vec: np.ndarray | None = None  # (K,) newest output in the feature domain
        self.fallback: list[FallbackPacket] = []  # fallback packets received, in arrival order

    def read_header(self, data: bytes) -> StreamHeader:
        """Parse and check the stream header against the model; returns it."""
        h = StreamHeader.from_bytes(bytes(data[:HEADER_SIZE]))
        if h.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"stream was made for model {h.fingerprint}, "
                f"but the model given has fingerprint {self.fingerprint}"
            )
        if h.mode == MODE_NERFVC and h.code_dim != self.tables.code_dim:
            raise ModelMismatchError(
                f"stream codes {h.code_dim} dims, the codec tables have {self.tables.code_dim}"
            )
        self.header = h
        self._step_index = h.step_index
        return h

    def _models_for(self, k: int) -> tuple:
        if k not in self._models:
            self._models[k] = model_pair(self.tables, k)
        return self._models[k]

    def conceal(self, index: int) -> DecodedFrame:
        """Output for a frame whose data is missing: per-dim AR prediction from the newest output."""
        t = self.tables
        if self._last_vec is None:
            vec = t.mean.copy()
        else:
            steps = max(index - self._last_index, 0)
            vec = t.mean + (t.ar ** min(steps, 1000)) * (self._last_vec - t.mean)
        code, pose = t.vec_to_features(vec)
        return DecodedFrame(index, code, pose, False, True)

    def decode(self, packet: bytes) -> DecodedFrame:
        """Decode one packet → its (last) frame. Raises :class:`BitstreamError` if the packet is damaged
        (count it as lost). Use :meth:`decode_frames` for multi-frame packets."""
        return self.decode_frames(packet)[-1]

    def decode_message(self, message: bytes) -> list[DecodedFrame]:
        """Decode a transport message holding one or more concatenated packets → all their frames.

        A damaged packet ends the message (the rest cannot be delimited reliably); frames decoded before
        it are returned and the damage is counted in ``stats.corrupt``.
        """
        out: list[DecodedFrame] = []
        pos, message = 0, bytes(message)
        while pos < len(message):
            self.stats.received += 1
            try:
                pkt = parse_packet(self._fp, message, pos, next_index=self._last_index + 1)
            except BitstreamError:
                self.stats.corrupt += 1
                break
            pos += pkt.size
            try:
                out += self._decode_parsed(pkt)
            except BitstreamError:
                continue
        return out

    def decode_frames(self, packet: bytes) -> list[DecodedFrame]:
        """Decode one packet → all its frames (in index order)."""
        self.stats.received += 1
        try:
            pkt = parse_packet(self._fp, bytes(packet), next_index=self._last_index + 1)
            if pkt.size != len(packet):
                raise BitstreamError("packet has trailing bytes")
        except BitstreamError:
            self.stats.corrupt += 1
            raise
        return self._decode_parsed(pkt)

    def _decode_parsed(self, pkt: Packet) -> list[DecodedFrame]:
        t = self.tables
        if pkt.kind == TYPE_FALLBACK:  # no features: kept for the receiver's compositor
            self.fallback.append(FallbackPacket(pkt.index, pkt.step_index, pkt.payload, pkt.size))
            return []
        paper = self.header is not None and self.header.mode == MODE_PAPER
        if (pkt.kind == TYPE_PAPER) != paper:
            self.stats.corrupt += 1
            raise BitstreamError("packet type does not match the stream's coding mode")
        index, n = pkt.index, pkt.count
        if index <= self._last_index:
            self.stats.late += 1
            out = [self.conceal(i) for i in range(index, index + n)]
            for f in out:
                f.late = True
            return out
        gap = index - self._last_index - 1
        if gap > 0:
            self.stats.lost += gap
            if pkt.kind == TYPE_DELTA:
                self._q_prev = None
        try:
            if pkt.kind == TYPE_PAPER:
                code, pose = _paper_unpayload(pkt.payload, t.code_dim)
                vec = t.features_to_vec(code, pose) if np.all(np.isfinite(pose)) else None
                out = [DecodedFrame(index, code, pose, True, False)]
                self._accept(index, vec)
                self.stats.decoded += 1
                return out
            if pkt.kind == TYPE_KEY:
                if not STEP_INDEX_MIN <= pkt.step_index <= STEP_INDEX_MAX:
                    raise BitstreamError("bad step index")
                key_m, delta_m = self._models_for(pkt.step_index)
                qs = decode_frames([key_m] + [delta_m] * (n - 1), pkt.payload, None)
                self._step_index = pkt.step_index
            elif self._q_prev is None:
                out = []
                for i in range(index, index + n):
                    f = self.conceal(i)
                    self._accept(i, None, f)
                    out.append(f)
                self.stats.concealed += n
                return out
            else:
                delta_m = self._models_for(self._step_index)[1]
                qs = decode_frames([delta_m] * n, pkt.payload, self._q_prev)
        except (BitstreamError, InputError) as e:
            self.stats.corrupt += 1
            self._q_prev = None
            raise BitstreamError(str(e)) from e
        out = []
        for j, q in enumerate(qs):
            vec = t.dequantize(q, self._step_index)
            code, pose = t.vec_to_features(vec)
            self._accept(index + j, vec)
            out.append(DecodedFrame(index + j, code, pose, pkt.kind == TYPE_KEY and j == 0, False))
        hist = None if pkt.kind == TYPE_KEY else self._q_prev
        for q in qs:
            hist = push_history(hist, q)
        self._q_prev = hist
        self.stats.decoded += n
        return out

    def _accept(self, index: int, vec: np.ndarray | None, concealed: DecodedFrame | None = None) -> None:
        if vec is None and concealed is not None:
            vec = self.tables.features_to_vec(concealed.code, concealed.pose)
        self._last_index = index
        if vec is not None:
            self._last_vec = vec


# -- file level ------------------------------------------------------------------------------------------
@dataclass
class StreamReport:
    """What :func:`decode_stream` found."""

    num_frames: int = 0
    decoded: int = 0
    concealed: int = 0  # frames output as predictions (lost, damaged, or after a loss until a keyframe)
    lost_indices: list[int] = field(default_factory=list)  # frames whose packet was missing or damaged
    corrupt_bytes: int = 0  # bytes skipped while resynchronizing
    corrupt_packets: int = 0
    truncated: bool = False
    valid: np.ndarray | None = None  # (N,) bool, False for concealed frames
    keyframes: int = 0
    bytes: int = 0
    header: StreamHeader | None = None
    fallback: list[FallbackPacket] = field(default_factory=list)  # in stream order (docs/guard.md)
    fallback_bytes: int = 0  # bytes of the fallback packets (part of ``bytes``)

    def summary(self) -> str:
        s = f"{self.num_frames} frames, {self.decoded} decoded, {self.concealed} concealed"
        if self.header is not None and self.header.frame_step > 1 and self.valid is not None:
            s += f" (every {self.header.frame_step}th of {len(self.valid)} camera frames)"
        if self.lost_indices:
            s += f", {len(self.lost_indices)} lost"
        if self.corrupt_packets or self.corrupt_bytes:
            s += f", {self.corrupt_bytes} corrupt bytes skipped"
        if self.truncated:
            s += ", stream truncated"
        if self.fallback:
            s += f", {len(self.fallback)} fallback packets ({self.fallback_bytes} bytes)"
        return s


def encode_stream(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    fps: float = 25.0,
    step: float | None = None,
    kbps: float | None = None,
    keyframe_interval: int | None = None,
    mode: str = "nerfvc",
    step_index: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
    frame_step: int | None = None,
) -> bytes:
    """Code a clip ``code (N,D)``, ``pose (N,12)`` at camera rate ``fps`` → stream bytes.

    ``kbps`` picks the step by bisection and, unless ``frame_step`` is given, the frame step too
    (:func:`choose_rate`); ``frame_step`` m codes camera frames ``0, m, 2m, …`` (default 1 without ``kbps``).
    ``keyframe_interval`` counts coded frames.
    """
    code = np.asarray(code)
    pose = np.asarray(pose)
    if code.ndim != 2 or pose.shape != (len(code), 12):
        raise InputError(f"expected code (N,D) and pose (N,12), got {code.shape} and {pose.shape}")
    rate_control = kbps is not None and mode == "nerfvc" and step_index is None
    if rate_control:
        steps = AUTO_FRAME_STEPS if frame_step is None else (frame_step,)
        frame_step, step_index = choose_rate(
            tables, fingerprint, code, pose, kbps, fps, keyframe_interval, rdoq, frames_per_packet, steps
        )
    m = frame_step or 1
    enc = StreamEncoder(
        tables,
        fingerprint,
        fps,
        step=step,
        keyframe_interval=keyframe_interval,
        mode=mode,
        num_frames=len(code[::m]),
        step_index=step_index,
        rdoq=rdoq,
        frames_per_packet=frames_per_packet,
        frame_step=m,
        tail=(len(code) - 1) % m if len(code) else 0,
    )
    parts = [enc.header()]
    parts += [enc.encode(c, p) for c, p in zip(code[::m], pose[::m])]
    parts.append(enc.flush())
    return b"".join(parts)


def decode_stream(
    data: bytes, tables: CodecTables, fingerprint: str
) -> tuple[np.ndarray, np.ndarray, StreamReport]:
    """Decode stream bytes → ``code (N,D)`` f32, ``pose (N,12)`` f32 for every camera frame,
    :class:`StreamReport` (its counts are coded frames; ``valid`` is per camera frame).

    A stream with a frame step m > 1 is decoded at its coded rate, then interpolated to the camera rate
    (:func:`nerfvc.features.upsample_features`); an interpolated frame is valid when both coded frames it
    comes from are.

    Header problems raise :class:`BitstreamError` / :class:`ModelMismatchError`; packet damage is skipped
    (resynchronizing on the next packet whose CRC checks), reported, and concealed. Frame counts and
    indices are bounded by what the stream's size can hold (:func:`frame_capacity`), so a forged header
    or index can neither allocate nor conceal more than that.
    """
    data = bytes(data)
    dec = StreamDecoder(tables, fingerprint)
    h = dec.read_header(data)
    capacity = frame_capacity(len(data))
    if h.num_frames > capacity + TRUNCATED_SLACK:
        raise BitstreamError(
            f"corrupt header: it claims {h.num_frames} frames, but {len(data)} bytes hold at most {capacity}"
        )
    limit = h.num_frames or capacity  # no frame index can reach this
    rep = StreamReport(header=h, bytes=len(data))
    frames: dict[int, DecodedFrame] = {}
    pos = HEADER_SIZE
    fp = _fp_bytes(fingerprint)
    skipping = False
    # Per-frame payload bound (escapes cost < 10 bytes per dim); keeps resynchronization cheap.
    max_payload = max(16 + 10 * tables.dims, 64 + 2 * (tables.code_dim + 12))
    while pos < len(data):
        try:
            pkt = parse_packet(fp, data, pos, max_payload, dec._last_index + 1, search=8)
            _confirm(fp, data, pos, pkt, max_payload, dec._last_index + 1, skipping)
        except BitstreamError:
            # Damaged or truncated: resynchronize byte by byte on the next packet whose CRC checks.
            if not skipping:
                rep.corrupt_packets += 1
            skipping = True
            rep.corrupt_bytes += 1
            pos += 1
            continue
        skipping = False
        pos += pkt.size
        if pkt.index + pkt.count > limit:
            continue  # cannot belong to this stream
        if pkt.kind == TYPE_FALLBACK:
            rep.fallback.append(FallbackPacket(pkt.index, pkt.step_index, pkt.payload, pkt.size))
            rep.fallback_bytes += pkt.size
            continue
        try:
            got = dec._decode_parsed(pkt)
        except BitstreamError:
            rep.corrupt_packets += 1
            continue
        for f in got:
            if f.late:
                continue
            frames[f.index] = f
            rep.keyframes += int(f.is_key)
    n = h.num_frames or (max(frames) + 1 if frames else 0)
    rep.num_frames = n
    rep.truncated = skipping or bool(h.num_frames and (not frames or max(frames) < n - 1))
    code = np.zeros((n, tables.code_dim), np.float32)
    pose = np.zeros((n, 12), np.float32)
    rep.valid = np.zeros(n, bool)
    last: DecodedFrame | None = None
    for i in range(n):
        f = frames.get(i)
        if f is None:
            rep.lost_indices.append(i)
            f = _conceal_from(tables, last, i)
        if f.concealed:
            rep.concealed += 1
        else:
            rep.decoded += 1
            rep.valid[i] = True
        code[i], pose[i] = f.code, f.pose
        last = f
    m = h.frame_step
    if m > 1 and n:
        shown = h.display_frames if h.num_frames else (n - 1) * m + 1
        code, pose = upsample_features(code, pose, m, shown)
        j = np.arange(shown)
        rep.valid = rep.valid[np.minimum(j // m, n - 1)] & rep.valid[np.minimum(-(-j // m), n - 1)]
    return code, pose, rep


def frame_capacity(nbytes: int) -> int:
    """The most frames a stream of ``nbytes`` bytes (header included) can hold."""
    return FRAMES_PER_BYTE * max(nbytes - HEADER_SIZE, 0)


def _confirm(
    fp: bytes, data: bytes, pos: int, pkt: Packet, max_payload: int, expected: int, skipping: bool
) -> None:
    """Second check for a delta packet (16-bit CRC) found in a file: raise :class:`BitstreamError` unless it
    ends the data, the next packet parses too, or it sits where the previous packet ended with exactly the
    expected index. Keeps a CRC-16 false match (~2**-16 per candidate index) from being accepted while
    resynchronizing byte by byte after damage."""
    if pkt.kind != TYPE_DELTA or (not skipping and pkt.index == expected):
        return
    end = pos + pkt.size
    if end < len(data):
        parse_packet(fp, data, end, max_payload, pkt.index + pkt.count, search=8)


def _conceal_from(tables: CodecTables, last: DecodedFrame | None, index: int) -> DecodedFrame:
    """Conceal frame ``index`` from the previous output (AR decay towards the mean, one frame)."""
    if last is None:
        code, pose = tables.vec_to_features(tables.mean)
    else:
        vec = tables.features_to_vec(last.code, last.pose)
        code, pose = tables.vec_to_features(tables.mean + tables.ar * (vec - tables.mean))
    return DecodedFrame(index, code, pose, False, True)


# -- rate control: the finest step whose real coded size fits a target rate ------------------------------
def clip_kbps(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    step_index: int,
    fps: float = 25.0,
    keyframe_interval: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
) -> float:
    """Actual kbps (packets incl. framing, header excluded) of the clip at a step index."""
    data = encode_stream(
        tables,
        fingerprint,
        code,
        pose,
        fps,
        keyframe_interval=keyframe_interval,
        step_index=step_index,
        rdoq=rdoq,
        frames_per_packet=frames_per_packet,
    )
    return (len(data) - HEADER_SIZE) * 8 / max(len(code), 1) * fps / 1000


def expected_kbps(
    tables: CodecTables,
    step_index: int,
    fps: float = 25.0,
    frame_step: int = 1,
    keyframe_interval: int | None = None,
) -> float:
    """The rate a stream of single-frame packets is expected to take at a step index, from the entropy
    model alone (no frames needed): per coded frame the expected residual bits of every dim, the packet
    framing (3 bytes for a delta packet, 11 for a keyframe, + 4 bits of byte rounding), a keyframe every
    ``keyframe_interval`` coded frames (default 2 s), at ``fps / frame_step`` coded frames per second.
    With a frame step m the delta residuals are taken √m times wider (the motion of m frames, as a random
    walk would have it)."""
    key, delta = model_pair(tables, step_index)
    coded_fps = fps / frame_step
    keyint = keyframe_interval or max(1, round(2 * coded_fps))
    key_bits = float(expected_bin_bits(key.b).sum()) + 8 * 11 + 4
    delta_bits = float(expected_bin_bits(delta.b * math.sqrt(frame_step)).sum()) + 8 * 3 + 4
    per_frame = (key_bits + (keyint - 1) * delta_bits) / keyint
    return per_frame * coded_fps / 1000


def live_frame_step(tables: CodecTables, kbps: float, fps: float) -> int:
    """Frame step for a live call at ``kbps``, chosen like :func:`choose_rate` but from the entropy model's
    expected rate (a live sender has no clip to try): the smallest m whose expected rate at the quality
    multiplier :data:`FRAME_STEP_ABOVE_Q` fits, else the largest."""
    k = index_from_step(FRAME_STEP_ABOVE_Q)
    for m in AUTO_FRAME_STEPS:
        if expected_kbps(tables, k, fps, m) <= kbps:
            return m
    return AUTO_FRAME_STEPS[-1]


def choose_rate(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    kbps: float,
    fps: float = 25.0,
    keyframe_interval: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
    frame_steps: tuple[int, ...] = AUTO_FRAME_STEPS,
) -> tuple[int, int]:
    """``(frame step, step index)`` for a clip at camera rate ``fps`` and a target ``kbps``: the smallest
    frame step whose finest fitting quality multiplier is at most :data:`FRAME_STEP_ABOVE_Q`; else the
    finest quality over the frame steps (a coarser frame step halves the framing and the frames to code,
    which at a low rate beats flattening every frame's expression).
    """
    best: tuple[float, int, int] | None = None
    for m in frame_steps:
        coded = len(code[::m])
        # the coded frames stand for len(code) camera frames, not coded · m: scale the target to match
        target = kbps * len(code) / max(coded * m, 1)
        k = choose_step_index(
            tables,
            fingerprint,
            code[::m],
            pose[::m],
            target,
            fps / m,
            keyframe_interval,
            rdoq,
            frames_per_packet,
        )
        q = step_from_index(k)
        if q <= FRAME_STEP_ABOVE_Q:
            return m, k
        if best is None or q < best[0]:
            best = (q, m, k)
    assert best is not None, "no frame step to try"
    return best[1], best[2]


def choose_step_index(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    kbps: float,
    fps: float = 25.0,
    keyframe_interval: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
) -> int:
    """Smallest step index (finest quality) whose coded clip fits ``kbps`` (bisection on real coded sizes).

    Returns the coarsest index if even that does not fit.
    """
    lo, hi = STEP_INDEX_MIN, STEP_INDEX_MAX
    if clip_kbps(tables, fingerprint, code, pose, hi, fps, keyframe_interval, rdoq, frames_per_packet) > kbps:
        return hi
    # Invariant: rate(hi) <= kbps; rate decreases (almost) monotonically with the index.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (
            clip_kbps(tables, fingerprint, code, pose, mid, fps, keyframe_interval, rdoq, frames_per_packet)
            <= kbps
        ):
            hi = mid
        else:
            lo = mid
    return hi
