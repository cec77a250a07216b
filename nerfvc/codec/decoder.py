"""The feature decoder: :class:`StreamDecoder` (packets that may arrive lost, damaged or out of order) and
:func:`decode_stream` (a whole file, resynchronizing after damage, concealing what is missing and
interpolating the camera frames between coded ones)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nerfvc.codec.coder import (
    check_reconstruction,
    decode_frames,
    model_pair,
    push_history,
    reconstruct,
)
from nerfvc.codec.framing import (
    HEADER_SIZE,
    MODE_NERFVC,
    MODE_PAPER,
    TRUNCATED_SLACK,
    TYPE_DELTA,
    TYPE_FALLBACK,
    TYPE_KEY,
    TYPE_PAPER,
    Packet,
    StreamHeader,
    fp_bytes,
    frame_capacity,
    paper_unpayload,
    parse_packet,
)
from nerfvc.codec.tables import (
    STEP_INDEX_MAX,
    STEP_INDEX_MIN,
    CodecTables,
)
from nerfvc.errors import BitstreamError, InputError, ModelMismatchError
from nerfvc.features import upsample_features


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
    """Per-packet decoder. Packets may arrive lost, damaged or out of order; decoding resumes at keyframes.

    ``reconstruction``: ``"mmse"`` (default) outputs each decoded value at the mean of the coded Laplace
    over its quantization bin (:func:`~nerfvc.codec.coder.reconstruct_steps`); ``"grid"`` outputs the
    bin centres ``q·s + mean`` (:meth:`CodecTables.reference`). Predictions use the indices either way.
    """

    def __init__(self, tables: CodecTables, fingerprint: str, reconstruction: str = "mmse") -> None:
        self.reconstruction = check_reconstruction(reconstruction)
        self.tables = tables
        self.fingerprint = fingerprint
        self._fp = fp_bytes(fingerprint)
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
                code, pose = paper_unpayload(pkt.payload, t.code_dim)
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
        hist = None if pkt.kind == TYPE_KEY else self._q_prev
        models = self._models_for(self._step_index)
        for j, q in enumerate(qs):
            m = models[0] if pkt.kind == TYPE_KEY and j == 0 else models[1]
            vec = reconstruct(t, m, q, hist, self._step_index, self.reconstruction)
            code, pose = t.vec_to_features(vec)
            self._accept(index + j, vec)
            out.append(DecodedFrame(index + j, code, pose, pkt.kind == TYPE_KEY and j == 0, False))
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
            s += f" (1 in {self.header.frame_step} of {len(self.valid)} camera frames coded)"
        if self.lost_indices:
            s += f", {len(self.lost_indices)} lost"
        if self.corrupt_packets or self.corrupt_bytes:
            s += f", {self.corrupt_bytes} corrupt bytes skipped"
        if self.truncated:
            s += ", stream truncated"
        if self.fallback:
            s += f", {len(self.fallback)} fallback packets ({self.fallback_bytes} bytes)"
        return s


def decode_stream(
    data: bytes, tables: CodecTables, fingerprint: str, reconstruction: str = "mmse"
) -> tuple[np.ndarray, np.ndarray, StreamReport]:
    """Decode stream bytes → ``code (N,D)`` f32, ``pose (N,12)`` f32 for every camera frame,
    :class:`StreamReport` (its counts are coded frames; ``valid`` is per camera frame).

    A stream with a frame step m > 1 is decoded at its coded rate, then interpolated to the camera rate
    (:func:`nerfvc.features.upsample_features`); an interpolated frame is valid when both coded frames it
    comes from are. ``reconstruction``: see :class:`StreamDecoder`.

    Header problems raise :class:`BitstreamError` / :class:`ModelMismatchError`; packet damage is skipped
    (resynchronizing on the next packet whose CRC checks), reported, and concealed. Frame counts and
    indices are bounded by what the stream's size can hold (:func:`frame_capacity`), so a forged header
    or index can neither allocate nor conceal more than that.
    """
    data = bytes(data)
    dec = StreamDecoder(tables, fingerprint, reconstruction)
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
    fp = fp_bytes(fingerprint)
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
        if pkt.kind == TYPE_FALLBACK:  # indexed by camera frame
            if h.num_frames and pkt.index >= h.display_frames:
                continue  # cannot belong to this stream
            rep.fallback.append(FallbackPacket(pkt.index, pkt.step_index, pkt.payload, pkt.size))
            rep.fallback_bytes += pkt.size
            continue
        if pkt.index + pkt.count > limit:
            continue  # cannot belong to this stream
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
        held = frames.get(i)
        if held is None:
            rep.lost_indices.append(i)
        f = _conceal_from(tables, last, i) if held is None else held
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
