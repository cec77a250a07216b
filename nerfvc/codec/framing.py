"""The ``.nvc`` framing (docs/bitstream.md): the stream header, packet serialization and parsing, the checks
that bind each packet to its model and frame index. Owns the byte layout; :mod:`nerfvc.codec.encoder` and
:mod:`nerfvc.codec.decoder` code the features inside it."""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from nerfvc.codec.tables import (
    POSE_DIM,
    STEP_INDEX_MAX,
    STEP_INDEX_MIN,
)
from nerfvc.errors import BitstreamError, InputError

MAGIC = b"NVCF"
VERSION = 4  # 2: indices centred on the training mean; 3: CRC-16 delta packets, compact group headers;
# 4: a frame step (every m-th camera frame coded; the receiver interpolates) in the header's byte 20
READABLE_VERSIONS = (3, 4)
MODE_NERFVC = 0  # predicted + range coded (this codec)
MODE_PAPER = 1  # fp16 features + zstd per packet (the seed paper's scheme, for comparison)
_HEADER = struct.Struct(">4sBB8sIHBbHI")  # magic ver mode fp fps_milli D layout step keyint nframes
MAX_FRAME_STEP = 8  # the header's frame layout byte: (frame step - 1) << 4 | tail, tail < frame step
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


def fp_bytes(fingerprint: str) -> bytes:
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
            fp_bytes(self.fingerprint),
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


def paper_payload(code: np.ndarray, pose: np.ndarray) -> bytes:
    raw = np.concatenate([np.asarray(code, np.float32), np.asarray(pose, np.float32)]).astype(">f2").tobytes()
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw)


def paper_unpayload(payload: bytes, d: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=(d + 12) * 2)
    except zstandard.ZstdError as e:
        raise BitstreamError(f"corrupt paper-mode payload ({e})") from e
    if len(raw) != (d + 12) * 2:
        raise BitstreamError("corrupt paper-mode payload (wrong size)")
    v = np.frombuffer(raw, ">f2").astype(np.float32)
    return v[:d], v[d:]


def frame_capacity(nbytes: int) -> int:
    """The most frames a stream of ``nbytes`` bytes (header included) can hold."""
    return FRAMES_PER_BYTE * max(nbytes - HEADER_SIZE, 0)
