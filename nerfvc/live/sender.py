"""The sending end of a live call: features → packets → an unordered, unreliable WebRTC data channel."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np

from nerfvc.errors import InputError, NerfvcError
from nerfvc.live.classic import ClassicEncoder
from nerfvc.live.interfaces import FeatureSource, PacketEncoder, SourceFrame
from nerfvc.live.transport import (
    CLASSIC_LABEL,
    CONTROL_LABEL,
    MEDIA_LABEL,
    WIRE_OVERHEAD_BYTES,
    LossyChannel,
    pack_packets,
    rtc_configuration,
)

if TYPE_CHECKING:
    from nerfvc.live.guard import LiveGuard

log = logging.getLogger(__name__)


class CallError(NerfvcError):
    """The call could not be set up (receiver unreachable, token refused, channel never opened)."""


@dataclass
class SenderConfig:
    """How to send. ``pack`` frames go in one message; ``drop`` injects random message loss (testing)."""

    url: str
    token: str
    pack: int = 1
    drop: float = 0.0
    seed: int | None = None
    max_frames: int | None = None
    connect_timeout: float = 20.0
    linger: float = 0.5  # s to wait after the last frame so queued messages leave before closing
    mark_every: int = 1  # send the capture time of every k-th frame on the control channel (latency)
    record: bool = False  # keep each frame's quantized features, as the receiver will decode them (tests)


@dataclass
class SenderReport:
    """What a call sent. Rates are over the media duration (frames / fps)."""

    frames: int = 0
    messages: int = 0
    payload_bytes: int = 0
    dropped_messages: int = 0  # by loss injection
    keyframe_requests: int = 0
    skipped_frames: int = 0  # the sender fell behind real time and skipped frames
    camera_frames: int = 0  # camera frames the call covered (sent, skipped, or between coded frames)
    fps: float = 0.0
    classic_bytes: int = 0
    classic_messages: int = 0
    fallback_packets: int = 0  # the quality guard's (their bytes are also in payload_bytes)
    fallback_bytes: int = 0
    link_bytes_sent: int = 0  # measured DTLS bytes (all channels)
    duration_s: float = 0.0
    quantized: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def media_seconds(self) -> float:
        """Seconds of media the call covered: every camera frame read (also those skipped or not coded)."""
        return max(self.camera_frames, self.frames) / self.fps if self.fps else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers: payload and wire rates separately (wire = payload + ~67 B DTLS/SCTP/message),
        over :attr:`media_seconds`."""
        media_s = self.media_seconds
        d = {k: v for k, v in asdict(self).items() if k != "quantized"}
        if media_s > 0:
            d["payload_kbps"] = round(8 * self.payload_bytes / media_s / 1000, 3)
            d["wire_kbps"] = round(
                8 * (self.payload_bytes + WIRE_OVERHEAD_BYTES * self.messages) / media_s / 1000, 3
            )
            d["bits_per_frame"] = round(8 * self.payload_bytes / max(self.frames, 1), 1)
            d["classic_payload_kbps"] = round(8 * self.classic_bytes / media_s / 1000, 3)
        return d


class Sender:
    """Runs one call: connects to a receiver, streams ``source`` through ``encoder``, reacts to control."""

    def __init__(
        self,
        source: FeatureSource,
        encoder: PacketEncoder,
        config: SenderConfig,
        classic: ClassicEncoder | None = None,
        guard: LiveGuard | None = None,
    ) -> None:
        self.source = source
        self.encoder = encoder
        self.config = config
        self.classic = classic
        self.guard = guard  # the quality guard: fallback pictures where the render would be worse
        self.report = SenderReport(fps=float(source.fps))
        self.pc: Any = None
        self._control: Any = None
        self._hello: str = ""
        self._remote_error: str | None = None

    # -- signaling ---------------------------------------------------------------------------------------
    async def _connect(self) -> tuple[Any, Any, Any]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection(rtc_configuration())
        media = pc.createDataChannel(MEDIA_LABEL, ordered=False, maxRetransmits=0)
        control = pc.createDataChannel(CONTROL_LABEL)
        classic = pc.createDataChannel(CLASSIC_LABEL) if self.classic else None
        await pc.setLocalDescription(await pc.createOffer())
        url = self.config.url.rstrip("/") + "/offer"
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        auth = {"Authorization": f"Bearer {self.config.token}"}  # checked before the body is read
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, json=body, headers=auth, timeout=aiohttp.ClientTimeout(total=15)) as resp,
            ):
                if resp.status == 403:
                    raise CallError(f"{self.config.url}: the receiver refused the token")
                if resp.status != 200:
                    raise CallError(f"{self.config.url}: signaling failed (HTTP {resp.status})")
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            await pc.close()
            raise CallError(f"{self.config.url}: cannot reach the receiver ({e})") from e
        except CallError:
            await pc.close()
            raise
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        channels = [c for c in (media, control, classic) if c is not None]
        deadline = time.monotonic() + self.config.connect_timeout
        while any(c.readyState != "open" for c in channels):
            if time.monotonic() > deadline:
                await pc.close()
                raise CallError(f"{self.config.url}: data channels did not open (ICE/DTLS failed)")
            await asyncio.sleep(0.02)
        return media, control, classic

    # -- control -----------------------------------------------------------------------------------------
    def _on_control(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except (ValueError, TypeError):
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "keyframe":
            self.report.keyframe_requests += 1
            self.encoder.request_keyframe()
        elif kind == "header?":
            self._control.send(self._hello)
        elif kind == "error":
            self._remote_error = str(msg.get("message", "unknown error"))
        elif kind == "ping":
            self._control.send(json.dumps({"type": "pong", "t0": msg.get("t0"), "ts": time.time()}))

    # -- main loop ---------------------------------------------------------------------------------------
    async def run(self) -> SenderReport:
        """Connect, stream every frame of the source in real time, close; returns the report."""
        media, control, classic_ch = await self._connect()
        self._control = control
        control.on("message", self._on_control)
        header = self.encoder.header()
        self._hello = json.dumps(
            {
                "type": "hello",
                "header": base64.b64encode(header).decode(),
                "fps": self.source.fps,
                "pack": self.config.pack,
                "classic": self.classic.codec if self.classic else None,
            }
        )
        control.send(self._hello)
        lossy = LossyChannel(media, self.config.drop, self.config.seed)
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1, thread_name_prefix="nerfvc-source")
        classic_pool = ThreadPoolExecutor(1, thread_name_prefix="nerfvc-classic")
        guard_pool = ThreadPoolExecutor(1, thread_name_prefix="nerfvc-guard")
        it: Iterator[SourceFrame] = iter(self.source)
        pending: list[bytes] = []
        marks_i: list[int] = []
        marks_t: list[float] = []
        t0: float | None = None
        start = time.time()
        try:
            while self.config.max_frames is None or self.report.frames < self.config.max_frames:
                frame = await loop.run_in_executor(pool, next, it, None)
                if frame is None:
                    break
                if self.pc.connectionState in ("failed", "closed"):
                    raise CallError("the connection to the receiver was lost")
                if self._remote_error is not None:
                    raise CallError(f"the receiver refused the stream: {self._remote_error}")
                capture = frame.capture_time
                if capture is None:  # pace by media time
                    if t0 is None:
                        t0 = time.time() - frame.timestamp
                    capture = t0 + frame.timestamp
                    wait = capture - time.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                n = self.report.frames
                packet = self.encoder.encode(frame.expression, frame.pose)
                adapt = getattr(self.encoder, "adapt", None)
                if adapt is not None:
                    adapt(8 * len(packet))
                if self.config.record:
                    rec = getattr(self.encoder, "last_reconstruction", None)
                    if rec is not None:
                        self.report.quantized[n] = (np.array(rec[0]), np.array(rec[1]))
                if self.guard is not None and frame.crop is not None:
                    for fallback in await loop.run_in_executor(guard_pool, self.guard.packets, n, frame.crop):
                        self._flush(lossy, control, pending, marks_i, marks_t)  # earlier frames go first
                        pending.append(fallback)
                        self._flush(lossy, control, pending, marks_i, marks_t)
                        self.report.payload_bytes += len(fallback)
                        self.report.fallback_bytes += len(fallback)
                        self.report.fallback_packets += 1
                self.report.frames += 1
                self.report.payload_bytes += len(packet)
                pending.append(packet)
                if n % self.config.mark_every == 0:
                    marks_i.append(n)
                    marks_t.append(capture)
                if len(pending) >= self.config.pack:
                    self._flush(lossy, control, pending, marks_i, marks_t)
                if self.classic is not None and frame.image is not None and classic_ch is not None:
                    if classic_ch.bufferedAmount < 1 << 20:
                        for p in await loop.run_in_executor(classic_pool, self.classic.encode, frame.image):
                            classic_ch.send(struct.pack(">I", n) + p)
                            self.report.classic_bytes += len(p)
                            self.report.classic_messages += 1
            self._flush(lossy, control, pending, marks_i, marks_t)
            control.send(json.dumps({"type": "bye", "frames": self.report.frames}))
            await asyncio.sleep(self.config.linger)
        finally:
            self.report.duration_s = round(time.time() - start, 3)
            self.report.skipped_frames = getattr(self.source, "skipped", 0)
            self.report.camera_frames = getattr(self.source, "camera_frames", 0)
            self.report.dropped_messages = lossy.dropped
            self.report.link_bytes_sent = _dtls_bytes(self.pc, "bytesSent")
            pool.shutdown(wait=False, cancel_futures=True)
            classic_pool.shutdown(wait=False, cancel_futures=True)
            guard_pool.shutdown(wait=False, cancel_futures=True)
            if self.classic is not None:
                self.classic.close()
            await self.pc.close()
        return self.report

    def _flush(
        self,
        media: LossyChannel,
        control: Any,
        pending: list[bytes],
        marks_i: list[int],
        marks_t: list[float],
    ) -> None:
        if not pending:
            return
        msg = pending[0] if self.config.pack == 1 else pack_packets(pending)
        self.report.messages += 1
        media.send(msg)
        if marks_i:
            control.send(json.dumps({"type": "mark", "i": marks_i, "t": marks_t}))
        pending.clear()
        marks_i.clear()
        marks_t.clear()


def _dtls_bytes(pc: Any, key: str) -> int:
    """Bytes counted by the peer connection's DTLS transport (every channel), 0 if unavailable."""
    try:
        stats = pc.sctp.transport._get_stats()
        return int(sum(getattr(s, key, 0) or 0 for s in stats.values()))
    except Exception:
        return 0


def check_url(url: str) -> str:
    """Validate ``--to``: an http(s) URL."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--to must be an http:// URL of a receiver, got {url!r}")
    return url
