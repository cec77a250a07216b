"""The feature encoder: :class:`StreamEncoder` (one packet per frame, for the live call),
:func:`encode_stream`
(a whole clip) and rate control — :func:`choose_rate` / :func:`choose_step_index` (the finest step, and the
frame step, whose real coded size fits a target), :func:`expected_kbps` / :func:`live_rate` (the rate
the entropy model predicts before any frame is seen)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.codec.coder import (
    check_reconstruction,
    encode_frames,
    model_pair,
    push_history,
    rdo_quantize,
    reconstruct,
)
from nerfvc.codec.entropy import expected_bin_bits
from nerfvc.codec.framing import (
    HEADER_SIZE,
    MAX_FPS,
    MAX_FRAME_STEP,
    MAX_GROUP,
    MAX_KEYINT,
    MIN_FPS,
    MODE_NERFVC,
    MODE_PAPER,
    TYPE_DELTA,
    TYPE_FALLBACK,
    TYPE_KEY,
    TYPE_PAPER,
    StreamHeader,
    build_packet,
    fp_bytes,
    paper_payload,
    parse_packet,
)
from nerfvc.codec.tables import (
    STEP_INDEX_MAX,
    STEP_INDEX_MIN,
    CodecTables,
    index_from_step,
    step_from_index,
)
from nerfvc.codec.wink import keep_wink
from nerfvc.errors import InputError
from nerfvc.face.eyes import EyeApertures
from nerfvc.features import interpolated_rotation_rms

if TYPE_CHECKING:
    from nerfvc.codec.decoder import FallbackPacket

# Framing bytes of an empty single-frame delta and key packet (the layout is framing's)
_EMPTY_DELTA_BYTES = len(build_packet(bytes(8), TYPE_DELTA, 0, b""))
_EMPTY_KEY_BYTES = len(build_packet(bytes(8), TYPE_KEY, 0, b""))

AUTO_FRAME_STEPS = (1, 2, 3, 4)  # frame steps the rate control tries (benchmarks/rate_render.py)
# The rate control codes every frame while that fits the target at a quality multiplier Q at most this; past
# it, coding every m-th frame at a finer Q renders better (benchmarks/results/rate_render.json)
FRAME_STEP_ABOVE_Q = 2.0
# Pose before rate: a frame step whose interpolated head rotation strays from the tracked one by more than
# this × the tracker's own rotation jitter gives way to a smaller one (a coarser expression), as long as that
# one's quality multiplier stays at most FRAME_STEP_POSE_MAX_Q. Interpolating white tracker jitter alone
# costs ≤ 1.1 × the jitter (m ≤ 4), so past 1.5 × real head motion is being lost (benchmarks/rate_render.py).
POSE_JITTER_FACTOR = 1.5
FRAME_STEP_POSE_MAX_Q = 4.0
# When no smaller frame step is within the bound, the one with the least error replaces the chosen one only
# if it cuts the error to this share or less (a coarser expression for a marginal gain is no trade)
POSE_FALLBACK_GAIN = 0.75
# The sender's score of a clip coded at (frame step, step index): higher is better (the mean PSNR of its
# render against the camera frames; nerfvc.pipeline.judge)
FrameStepJudge = Callable[[int, int], float]
# Live rate control holds the rate's running mean within this share of the target: a live target is the
# link's budget, a cap, so the band lies below it
LIVE_RATE_BAND = (0.90, 1.00)


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
    ``reconstruction`` names the decoder's output rule that ``last_reconstruction`` follows
    (:class:`~nerfvc.codec.decoder.StreamDecoder`).
    ``frame_step`` m > 1 declares that the caller codes every m-th camera frame (``fps`` stays the camera
    rate; ``tail``: camera frames after the last coded one, for a file); rates and the default keyframe
    interval (2 s) then count coded frames at ``fps / m``.
    ``eyes`` (the person's face model's, when the code starts with its expression): a frame that winks keeps
    its wink through the quantizer (:func:`nerfvc.codec.wink.keep_wink`; encoder only).
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
        reconstruction: str = "mmse",
        eyes: EyeApertures | None = None,
    ) -> None:
        self.reconstruction = check_reconstruction(reconstruction)
        if eyes is not None and eyes.expression_dim > tables.code_dim:
            raise InputError(f"the face model's {eyes.expression_dim} expression dims exceed the code's")
        self.eyes = eyes
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InputError(f"fps must be in {MIN_FPS:g}..{MAX_FPS:g}, got {fps}")
        if not 1 <= frame_step <= MAX_FRAME_STEP or not 0 <= tail < frame_step:
            raise InputError(f"frame step must be in 1..{MAX_FRAME_STEP} (tail below it), got {frame_step}")
        if frame_step > 1 and mode == "paper":
            raise InputError("paper mode codes every frame (frame step 1)")
        self.frame_step, self.tail = int(frame_step), int(tail)
        self.tables = tables
        self.fingerprint = fingerprint
        self._fp = fp_bytes(fingerprint)
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
        self._recent_bits: deque[float] = deque(maxlen=self.keyframe_interval)  # the last keyframe period
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

        Keeps the mean rate of the last keyframe interval's packets (one keyframe among them, so its cost is
        counted as often as it is paid) and, outside :data:`LIVE_RATE_BAND` of the target (the target is a
        cap), schedules a step change proportional to the log ratio to the band's middle (at most ±4/16
        octave), applied at the next keyframe.
        """
        if not self.target_kbps:
            return
        self._recent_bits.append(packet_bits)
        target = self.target_kbps * 1000 * self.frame_step / self.fps  # bits per coded frame
        ratio = float(np.mean(self._recent_bits)) / max(target, 1e-9)
        low, high = LIVE_RATE_BAND
        if low <= ratio <= high:
            self._pending_step = None
            return
        delta = int(np.clip(round(32 * math.log2(ratio / math.sqrt(low * high))), -4, 4))
        delta = delta or (1 if ratio > high else -1)
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

    def _reconstruct(self, q: np.ndarray, key: bool) -> tuple[np.ndarray, np.ndarray]:
        """What the decoder outputs for indices ``q (K,)`` (call before ``q`` enters the history)."""
        m, hist = (self._models[0], None) if key else (self._models[1], self._q_prev)
        return self.tables.vec_to_features(
            reconstruct(self.tables, m, q, hist, self.step_index, self.reconstruction)
        )

    def encode(self, code: np.ndarray, pose: np.ndarray, force_key: bool = False) -> bytes:
        """Code one frame: ``code (D,)``, ``pose (12,)`` → one self-contained packet (or ``b""`` while a
        multi-frame packet is being filled)."""
        code = np.asarray(code, dtype=np.float64).reshape(-1)
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        vec = self.tables.features_to_vec(code, pose)  # checks dims and finiteness
        index = self.index
        if self.mode == MODE_PAPER:
            pkt = build_packet(self._fp, TYPE_PAPER, index, paper_payload(code, pose))
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
            if self.eyes is not None:
                m, hist = (self._models[0], None) if key else (self._models[1], self._q_prev)
                q = keep_wink(self.eyes, self.tables, m, hist, self.step_index, self.reconstruction, code, q)
            if self.frames_per_packet > 1:
                if not self._group:
                    self._group_key, self._group_ref = key, self._q_prev
                self._group.append(q)
                if key:
                    self._since_key = 0
                    self._force_key = False
                self._since_key += 1
                self.last_reconstruction = self._reconstruct(q, key)
                self._q_prev = push_history(None if key else self._q_prev, q)
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
            self.last_reconstruction = self._reconstruct(q, key)
            self._q_prev = push_history(None if key else self._q_prev, q)
        self.index += 1
        if self.target_kbps:
            self.adapt(8 * len(pkt))
        return pkt


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
    eyes: EyeApertures | None = None,
    judge: FrameStepJudge | None = None,
) -> bytes:
    """Code a clip ``code (N,D)``, ``pose (N,12)`` at camera rate ``fps`` → stream bytes.

    ``kbps`` picks the step by bisection and, unless ``frame_step`` is given, the frame step too
    (:func:`choose_rate`, with ``judge`` if given); ``frame_step`` m codes camera frames ``0, m, 2m, …``
    (default 1 without ``kbps``). ``keyframe_interval`` counts coded frames. ``eyes``: winks kept
    (:class:`StreamEncoder`).
    """
    code = np.asarray(code)
    pose = np.asarray(pose)
    if code.ndim != 2 or pose.shape != (len(code), 12):
        raise InputError(f"expected code (N,D) and pose (N,12), got {code.shape} and {pose.shape}")
    if kbps is not None and mode == "nerfvc" and step_index is None:
        steps = AUTO_FRAME_STEPS if frame_step is None else (frame_step,)
        frame_step, step_index = choose_rate(
            tables,
            fingerprint,
            code,
            pose,
            kbps,
            fps,
            keyframe_interval,
            rdoq,
            frames_per_packet,
            steps,
            eyes,
            judge if frame_step is None else None,
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
        eyes=eyes,
    )
    parts = [enc.header()]
    parts += [enc.encode(c, p) for c, p in zip(code[::m], pose[::m])]
    parts.append(enc.flush())
    return b"".join(parts)


def insert_fallback(data: bytes, fingerprint: str, packets: Iterable[FallbackPacket]) -> bytes:
    """A whole stream ``data`` with the quality guard's fallback ``packets`` (camera-frame indices) framed
    and inserted, each before the feature packet carrying the coded frame at or before its camera frame (so
    a reader meets the picture before the frames it applies to); the header is unchanged."""
    fp = fp_bytes(fingerprint)
    header = StreamHeader.from_bytes(data[:HEADER_SIZE])
    pending = sorted(packets, key=lambda p: p.index)
    out, pos, next_index = [data[:HEADER_SIZE]], HEADER_SIZE, 0
    while pos < len(data):
        pkt = parse_packet(fp, data, pos, next_index=next_index)
        if pkt.kind != TYPE_FALLBACK:
            last = pkt.index + pkt.count - 1  # the packet's last coded frame
            while pending and pending[0].index // header.frame_step <= last:
                p = pending.pop(0)
                out.append(build_packet(fp, TYPE_FALLBACK, p.index, p.picture, p.alpha))
            next_index = last + 1
        out.append(data[pos : pos + pkt.size])
        pos += pkt.size
    out += [build_packet(fp, TYPE_FALLBACK, p.index, p.picture, p.alpha) for p in pending]
    return b"".join(out)


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
    header: bool = False,
    eyes: EyeApertures | None = None,
) -> float:
    """Actual kbps of the clip coded at a step index: its packets with their framing, and with ``header`` the
    stream header too (what a file holds; a live call sends the header once per call)."""
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
        eyes=eyes,
    )
    return (len(data) - (0 if header else HEADER_SIZE)) * 8 / max(len(code), 1) * fps / 1000


def expected_kbps(
    tables: CodecTables,
    step_index: int,
    fps: float = 25.0,
    frame_step: int = 1,
    keyframe_interval: int | None = None,
) -> float:
    """The rate a stream of single-frame packets is expected to take at a step index (no frames needed):
    per coded frame the payload bits, the packet framing (an empty delta or key packet's bytes, + 4 bits of
    byte rounding), a keyframe every ``keyframe_interval`` coded frames (default 2 s), at
    ``fps / frame_step`` coded frames per second. The payload bits are what the training features took at
    that frame step (``tables.rate_curve``, version 6); for older tables, or a frame step the curve does not
    know, the entropy model's own expected bits, with the delta residuals taken √m times wider at frame step
    m (the motion of m frames, as a random walk would have it; pessimistic at coarse steps)."""
    curve = tables.rate_curve
    if curve is not None and frame_step <= curve.max_frame_step:
        key_payload, delta_payload = curve.bits(step_index, frame_step)
    else:
        key, delta = model_pair(tables, step_index)
        key_payload = float(expected_bin_bits(key.b).sum())
        delta_payload = float(expected_bin_bits(delta.b * math.sqrt(frame_step)).sum())
    coded_fps = fps / frame_step
    keyint = keyframe_interval or max(1, round(2 * coded_fps))
    key_bits = key_payload + 8 * _EMPTY_KEY_BYTES + 4
    delta_bits = delta_payload + 8 * _EMPTY_DELTA_BYTES + 4
    per_frame = (key_bits + (keyint - 1) * delta_bits) / keyint
    return per_frame * coded_fps / 1000


def live_rate(tables: CodecTables, kbps: float, fps: float, frame_step: int | None = None) -> tuple[int, int]:
    """``(frame step, starting step index)`` for a live call at ``kbps``, chosen like :func:`choose_rate` but
    from the expected rate (:func:`expected_kbps`; a live sender has no clip to try): the smallest m whose
    expected rate at the quality multiplier :data:`FRAME_STEP_ABOVE_Q` fits (else the largest, or
    ``frame_step`` when given), kept or made smaller by :func:`pose_first` on
    :func:`expected_rotation_error` when the tables know the training poses' error per frame step, then the
    finest step index expected to fit at that m (live rate control adapts from there)."""
    if frame_step is None:
        k2 = index_from_step(FRAME_STEP_ABOVE_Q)
        fits = [m for m in AUTO_FRAME_STEPS if expected_kbps(tables, k2, fps, m) <= kbps]
        frame_step = fits[0] if fits else AUTO_FRAME_STEPS[-1]
        known = tables.frame_step_rotation_error
        if frame_step <= len(known):  # the training poses say what each frame step costs the head pose
            steps = {
                m: _expected_finest_index(tables, kbps, fps, m) for m in AUTO_FRAME_STEPS if m <= frame_step
            }
            frame_step = pose_first(
                tables, frame_step, steps, lambda m: expected_rotation_error(tables, m, steps[m])
            )
    return frame_step, _expected_finest_index(tables, kbps, fps, frame_step)


def _expected_finest_index(tables: CodecTables, kbps: float, fps: float, frame_step: int) -> int:
    """The finest step index whose :func:`expected_kbps` at ``frame_step`` is at most ``kbps``."""
    return _finest_fitting_index(lambda k: expected_kbps(tables, k, fps, frame_step), kbps)


def expected_rotation_error(tables: CodecTables, frame_step: int, step_index: int) -> float:
    """The head rotation error (degrees RMS) a frame step is expected to cost, from the tables alone: the
    training poses' interpolation error at that step (``tables.frame_step_rotation_error``) and the
    rotation steps' uniform quantization noise (s²/12 per dim), added in quadrature."""
    interp = float(tables.frame_step_rotation_error[frame_step - 1])
    quant = np.degrees(tables.steps(step_index)[:3]) ** 2 / 12
    return math.sqrt(interp**2 + float(quant.sum()))


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
    eyes: EyeApertures | None = None,
    judge: FrameStepJudge | None = None,
) -> tuple[int, int]:
    """``(frame step, step index)`` for a clip at camera rate ``fps`` and a target ``kbps``: the smallest
    frame step whose finest fitting quality multiplier is at most :data:`FRAME_STEP_ABOVE_Q`; else the
    finest quality over the frame steps (a coarser frame step halves the framing and the frames to code,
    which at a low rate beats flattening every frame's expression). Pose before rate: when that frame step's
    decoded head rotation (:func:`frame_step_pose_error`) strays further from ``pose`` than
    :func:`pose_error_bound`, :func:`pose_first` gives way to a smaller frame step (the expression pays, not
    the pose). With a ``judge`` (the sender's render of the decoded clip against its camera frames), the
    frame step is the judge's best instead (:func:`judged_frame_step`).
    """
    fits: dict[int, int] = {}  # frame step -> finest fitting step index
    for m in frame_steps:
        coded = len(code[::m])
        # the coded frames stand for len(code) camera frames, not coded · m: scale the target to match
        target = kbps * len(code) / max(coded * m, 1)
        fits[m] = choose_step_index(
            tables,
            fingerprint,
            code[::m],
            pose[::m],
            target,
            fps / m,
            keyframe_interval,
            rdoq,
            frames_per_packet,
            eyes,
        )
    assert fits, "no frame step to try"
    fine = [m for m in frame_steps if step_from_index(fits[m]) <= FRAME_STEP_ABOVE_Q]
    chosen = fine[0] if fine else min(frame_steps, key=lambda m: step_from_index(fits[m]))
    m = pose_first(tables, chosen, fits, lambda m: frame_step_pose_error(tables, code, pose, m, fits[m]))
    if judge is not None:
        m = judged_frame_step(tables, code, pose, fits, m, judge)
    return m, fits[m]


def judged_frame_step(
    tables: CodecTables,
    code: np.ndarray,
    pose: np.ndarray,
    fits: dict[int, int],
    chosen: int,
    judge: FrameStepJudge,
) -> int:
    """The frame step of ``fits`` (frame step → finest fitting step index) that ``judge`` scores best (the
    smaller one on a tie), among ``chosen`` (the rule's) and those that fit the rate (not the coarsest
    index) with a decoded head rotation within :func:`pose_error_bound` — pose before rate still holds.

    Why: the rule trades the expression's quantization against interpolation by the step size alone, but
    which costs the render more depends on the clip's motion: with every frame step rendered, the best one
    is not the rule's on 12 of 16 points of the 8 shared clips at 1 and 2 kbps; within the pose bound, in
    ``nerfvc eval`` at 512², the choice changed on 8 of 16, +0.15 dB PSNR on those (docs/bitstream.md
    "Frame step chosen by rendering").
    """
    bound = pose_error_bound(tables)

    def allowed(m: int) -> bool:
        if m == chosen:
            return True
        if fits[m] >= STEP_INDEX_MAX:
            return False
        return bound <= 0 or frame_step_pose_error(tables, code, pose, m, fits[m]) <= bound

    candidates = [m for m in sorted(fits) if allowed(m)]
    if len(candidates) == 1:
        return chosen
    scores = {m: judge(m, fits[m]) for m in candidates}
    return max(candidates, key=lambda m: (scores[m], -m))


def pose_first(
    tables: CodecTables, chosen: int, fits: dict[int, int], rotation_error: Callable[[int], float]
) -> int:
    """Pose before rate: ``chosen`` when its ``rotation_error(m)`` (degrees RMS) is within
    :func:`pose_error_bound`; else the largest smaller frame step within the bound, or failing that the one
    with the smallest error if that cuts the error to :data:`POSE_FALLBACK_GAIN` × ``chosen``'s or less,
    among those of ``fits`` (frame step → step index) whose quality multiplier is at most
    :data:`FRAME_STEP_POSE_MAX_Q`."""
    bound = pose_error_bound(tables)
    if chosen == 1 or bound <= 0:
        return chosen
    error = {chosen: rotation_error(chosen)}
    if error[chosen] <= bound:
        return chosen
    for m in fits:
        if m < chosen and step_from_index(fits[m]) <= FRAME_STEP_POSE_MAX_Q:
            error[m] = rotation_error(m)
    within = [m for m in error if error[m] <= bound]
    if within:
        return max(within)
    best = min(error, key=lambda m: error[m])
    return best if error[best] <= POSE_FALLBACK_GAIN * error[chosen] else chosen


def pose_error_bound(tables: CodecTables) -> float:
    """The head rotation error (degrees RMS) a frame step may cost: :data:`POSE_JITTER_FACTOR` × the
    tracker's rotation jitter the tables were fitted with (0: unknown, no bound)."""
    return POSE_JITTER_FACTOR * math.degrees(math.sqrt(float(np.sum(tables.jitter[:3] ** 2))))


def frame_step_pose_error(
    tables: CodecTables, code: np.ndarray, pose: np.ndarray, frame_step: int, step_index: int
) -> float:
    """RMS angle (degrees) between ``pose (N,12)`` and what a receiver draws when every ``frame_step``-th
    frame is coded at ``step_index`` (bin centres) and the others interpolated."""
    _, sent = tables.reference(code[::frame_step], pose[::frame_step], step_index)
    return interpolated_rotation_rms(pose, sent, frame_step)


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
    eyes: EyeApertures | None = None,
) -> int:
    """Smallest step index (finest quality) whose coded clip, header included, fits ``kbps`` (bisection on
    real coded sizes, winks kept with ``eyes``): the target caps the whole stream.

    Returns the coarsest index if even that does not fit.
    """
    return _finest_fitting_index(
        lambda k: clip_kbps(
            tables,
            fingerprint,
            code,
            pose,
            k,
            fps,
            keyframe_interval,
            rdoq,
            frames_per_packet,
            header=True,
            eyes=eyes,
        ),
        kbps,
    )


def _finest_fitting_index(rate: Callable[[int], float], kbps: float) -> int:
    """Smallest step index whose ``rate(index)`` (kbps) is at most ``kbps``, by bisection over the index range
    (the rate falls, almost monotonically, with the index); the coarsest index if even that does not fit."""
    lo, hi = STEP_INDEX_MIN, STEP_INDEX_MAX
    if rate(hi) > kbps:
        return hi
    while hi - lo > 1:  # invariant: rate(hi) <= kbps
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if rate(mid) <= kbps else (mid, hi)
    return hi
