"""The sender's guard and the receiver's compositor: when the render would be worse than a picture, show a
picture.

Sender (:class:`SenderGuard`), per frame: the sender holds the receiver's model, so it renders the frame's
features at a tiny size (``check_size``, 64 px by default) and compares that with the camera frame at the
same size — the estimate of the receiver's error (calibrated in ``benchmarks/guard.py``: Spearman 0.99 with
the PSNR of the full-size render on the held-out frames of the 8 shared clips). It mirrors what the
receiver holds (the last fallback picture, decoded) and:

- **blends**: when the held picture is closer to the camera frame than the render by more than
  ``margin_db`` (3 dB), the receiver is told (a fallback packet, only when the weight changes) to blend the
  picture over the render with the least-squares weight (quantized to eighths), else to show the render;
- **refreshes**: a new picture is coded when the guard fires (render worse than the held picture would be if
  it were fresh: ``render_db < fresh_db - margin_db``; before the first picture ``fresh_db = first_db``,
  30 dB, what a 128 px x265 QP 42 picture measured at 64 px) and the held picture has gone stale by
  ``refresh_db``, at most one try per ``min_interval`` frames, and sent only if it beats the render by
  ``picture_gain_db`` and its bits are in the budget (a token bucket: ``max_picture_kbps`` on average,
  ``burst_bits`` at most, never overdrawn).

The thresholds make the guard act on failures, not on modest PSNR gains: a 128 px picture costs about
3.4 kbit and, upsampled, scores LPIPS 0.22 at 256² — blurrier than every 10-minute render of the shared
clips — so blending it over a render that is merely a few dB off trades sharpness and identity for PSNR
(measured: docs/guard.md, "Thresholds").

Receiver (:class:`Compositor`): applies fallback packets from their frame index on; composes each rendered
frame with the held picture (bicubic upsampled) at the packet's weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerfvc.codec.decoder import FallbackPacket
from nerfvc.errors import BitstreamError, InputError
from nerfvc.guard.picture import decode_picture, encode_picture, shrink, upsample

ALPHA_LEVELS = 8  # the blend weight is sent in eighths (0 = the render alone, 8 = the picture alone)


@dataclass
class GuardConfig:
    """Sender-side guard settings (defaults chosen by ``benchmarks/guard.py``, see docs/guard.md)."""

    check_size: int = 64  # px: the sender's own tiny render, compared with the camera frame
    picture_size: int = 128  # px, longer side of a fallback picture
    picture_codec: str = "hevc"
    picture_quality: int = 42  # x265 QP (webp/jpeg: 0-100 quality)
    margin_db: float = 3.0  # the picture must beat the render by this much to be shown
    picture_gain_db: float = 6.0  # ... and a new picture must beat it by this much to be sent (~3.4 kbit)
    first_db: float = 30.0  # before any picture: what a fresh one is assumed to reach (check size, dB)
    refresh_db: float = 2.0  # a held picture this much worse than when it was sent is stale
    min_interval: int = 12  # frames between two pictures, at least
    max_picture_kbps: float = 0.5  # average budget for pictures (token bucket)
    burst_bits: int = 4000  # ... holding at most this many bits (about one picture)

    def check(self) -> None:
        """:class:`InputError` for an impossible setting."""
        if not 8 <= self.check_size <= 256 or not 8 <= self.picture_size <= 256:
            raise InputError("guard check and picture sizes must be in 8..256 px")
        if not (self.max_picture_kbps >= 0 and np.isfinite(self.max_picture_kbps)):
            raise InputError("guard picture budget must be a finite kbps >= 0")
        if self.min_interval < 1:
            raise InputError("guard min interval must be >= 1 frame")


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))


def _db(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / max(mse, 1e-3)))


@dataclass
class GuardDecision:
    """What the guard decided for one frame (for logs and reports)."""

    index: int
    render_db: float  # PSNR of the tiny render vs the camera frame, at check size
    held_db: float  # the same for the held picture (-inf without one)
    alpha: int  # blend weight in eighths shown for this frame (0 = render)
    picture_bits: int  # bits of a picture sent for this frame (0 if none)
    packet_bits: int  # bits of every fallback packet sent for this frame
    fired: bool  # render estimated worse than a fresh picture


class SenderGuard:
    """Per-frame guard at the sender: ``step(index, camera_frame, tiny_render)`` → fallback packets to
    send (:class:`FallbackPacket` with picture payloads; the caller frames them with
    ``StreamEncoder.fallback``)."""

    def __init__(self, config: GuardConfig | None = None, fps: float = 25.0) -> None:
        self.config = config or GuardConfig()
        self.config.check()
        self.fps = float(fps)
        self.held: np.ndarray | None = None  # the receiver's picture, decoded, at check size
        self.held_full: np.ndarray | None = None  # ... as decoded (picture size)
        self.fresh_db = -np.inf  # PSNR of the held picture when it was sent
        self.alpha = 0
        self.last_picture = -(10**9)
        self._tokens = self._cap = float(self.config.burst_bits)
        self._last_bits = 0  # bits of the last picture sent

    def _small(self, frame: np.ndarray) -> np.ndarray:
        s = self.config.check_size
        return shrink(frame, s) if max(frame.shape[:2]) != s else frame

    def step(
        self, index: int, camera_frame: np.ndarray, tiny_render: np.ndarray, framing_bits: int = 88
    ) -> tuple[list[FallbackPacket], GuardDecision]:
        """Decide for frame ``index``: ``camera_frame`` (H,W,3) uint8 as the receiver's camera crops it,
        ``tiny_render`` the model's render of the frame's features at ``check_size``. Returns the packets to
        send before the frame's features and the decision. ``framing_bits``: per-packet framing (88 for
        ``StreamEncoder.fallback`` with a short payload), for the budget."""
        cfg = self.config
        self._tokens = min(self._cap, self._tokens + cfg.max_picture_kbps * 1000 / self.fps)
        cam = self._small(camera_frame)
        ren = self._small(tiny_render)
        r_db = _db(_mse(ren, cam))
        h_db = _db(_mse(self.held, cam)) if self.held is not None else -np.inf
        # a fresh picture is assumed as good as the last one was when sent (first: ``first_db``)
        fresh = self.fresh_db if np.isfinite(self.fresh_db) else cfg.first_db
        fired = r_db < fresh - cfg.margin_db
        packets: list[FallbackPacket] = []
        pic_bits = 0
        stale = self.held is None or h_db < self.fresh_db - cfg.refresh_db
        # a try only once the budget holds as many bits as the last picture took (no wasted encodes)
        can = index - self.last_picture >= cfg.min_interval and self._tokens >= self._last_bits
        if fired and stale and can:
            self.last_picture = index  # a try, sent or not: the next one waits ``min_interval``
            payload = encode_picture(camera_frame, cfg.picture_size, cfg.picture_codec, cfg.picture_quality)
            full = decode_picture(payload)
            small = self._small(upsample(full, *camera_frame.shape[1::-1]))
            fresh_db = _db(_mse(small, cam))
            bits = 8 * len(payload) + framing_bits
            # worth its bits (the receiver will show it) and within the budget
            if fresh_db > r_db + cfg.picture_gain_db and bits <= self._tokens:
                self.held_full, self.held, self.fresh_db = full, small, fresh_db
                h_db = fresh_db
                pic_bits = self._last_bits = bits
                self._tokens -= pic_bits
                packets.append(FallbackPacket(index, 0, payload))  # weight set below
        alpha = 0
        if self.held is not None and h_db > r_db + cfg.margin_db:
            d = self.held.astype(np.float32) - ren
            a = float(np.sum((cam.astype(np.float32) - ren) * d) / max(float(np.sum(d * d)), 1e-6))
            alpha = int(np.clip(round(a * ALPHA_LEVELS), 1, ALPHA_LEVELS))
        if packets:
            packets[0].alpha = alpha_byte(alpha)
        elif alpha != self.alpha:
            packets.append(FallbackPacket(index, alpha_byte(alpha), b""))
        self.alpha = alpha
        bits = pic_bits + (framing_bits if packets and not pic_bits else 0)
        return packets, GuardDecision(index, r_db, h_db, alpha, pic_bits, bits, bool(fired))


def alpha_byte(eighths: int) -> int:
    """Blend weight in eighths → the packet's 0..255 byte."""
    return round(255 * eighths / ALPHA_LEVELS)


class Compositor:
    """Receiver side: holds the latest fallback picture and blends it over rendered frames."""

    def __init__(self) -> None:
        self.picture: np.ndarray | None = None
        self.alpha = 0.0
        self._pending: list[FallbackPacket] = []
        self.frames_in_fallback = 0
        self.bad_pictures = 0

    def add(self, packets: list[FallbackPacket] | FallbackPacket) -> None:
        """Queue fallback packets (any order); each applies from its frame index on."""
        self._pending += [packets] if isinstance(packets, FallbackPacket) else list(packets)
        self._pending.sort(key=lambda p: p.index)

    def compose(self, index: int, render: np.ndarray) -> np.ndarray:
        """The frame to show for ``index``: the render, or the held picture blended over it."""
        while self._pending and self._pending[0].index <= index:
            p = self._pending.pop(0)
            if p.picture:
                try:
                    self.picture = decode_picture(p.picture)
                except BitstreamError:
                    self.bad_pictures += 1  # keep the old picture; the weight still applies to it
            self.alpha = p.alpha / 255.0
        if self.picture is None or self.alpha <= 0:
            return render
        self.frames_in_fallback += 1
        h, w = render.shape[:2]
        pic = upsample(self.picture, w, h).astype(np.float32)
        out = self.alpha * pic + (1 - self.alpha) * render.astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
