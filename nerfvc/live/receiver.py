"""The receiving end of a live call: an aiohttp server with the viewer page, token-checked signaling, packet
decoding, a render worker thread and JPEG frames + stats pushed to viewers over a WebSocket.

Why WebSocket JPEG to the browser rather than an aiortc video track: it works the same in every browser,
including headless Chromium (no codec negotiation — Debian's Chromium lacks H.264 —, no autoplay policy, no
second ICE/DTLS session), costs no video-encoder CPU on the receiver beyond a JPEG, shows exactly the
rendered pixels, and each frame carries its metadata (frame index, send time) so the page can acknowledge
what it displayed and the receiver can measure display latency. The page is meant to run next to the
receiver (localhost/LAN); the low-bitrate hop is sender → receiver.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import math
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from nerfvc.features import upsample_features
from nerfvc.guard.fallback import Compositor
from nerfvc.live.adapt import RenderSizeController, upscale
from nerfvc.live.classic import CLASSIC_CODECS, ClassicDecoder
from nerfvc.live.interfaces import DecodedFrameLike, FrameRenderer, PacketDecoder
from nerfvc.live.stats import LatencyMeter, RateMeter, percentile_ms
from nerfvc.live.transport import (
    CLASSIC_LABEL,
    CONTROL_LABEL,
    MEDIA_LABEL,
    WIRE_OVERHEAD_BYTES,
    rtc_configuration,
    unpack_packets,
)

log = logging.getLogger(__name__)

SIZES = (128, 256, 512)
PANEL_NERFVC, PANEL_CLASSIC = 0, 1
KEYFRAME_RETRY_S = 0.3  # re-request a keyframe if the stream is still broken after this long


def new_token() -> str:
    """A random signaling token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def _jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


MAX_CONTROL_BYTES = 1 << 16
MAX_MARKS = 1000  # (index, time) pairs per mark message
MAX_PACK = 64  # frames per media message


def _number(v: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def parse_control(message: str | bytes) -> dict[str, Any]:
    """Parse and validate one sender → receiver control message (docs/live.md); ``ValueError`` naming the
    problem unless it is one of ``hello``, ``mark``, ``pong``, ``bye`` with well-typed fields."""
    if len(message) > MAX_CONTROL_BYTES:
        raise ValueError("control message too long")
    try:
        msg = json.loads(message)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("not an object with a string 'type'")
    kind = msg["type"]
    if kind == "hello":
        if not isinstance(msg.get("header"), str) or len(msg["header"]) > 4096:
            raise ValueError("hello: 'header' must be a base64 string")
        if msg.get("fps") is not None and not _number(msg["fps"], 1, 240):
            raise ValueError("hello: 'fps' must be a number in 1..240")
        if msg.get("pack") is not None and not _int(msg["pack"], 1, MAX_PACK):
            raise ValueError(f"hello: 'pack' must be an integer in 1..{MAX_PACK}")
        if msg.get("classic") is not None and msg["classic"] not in CLASSIC_CODECS:
            raise ValueError(f"hello: 'classic' must be one of {', '.join(CLASSIC_CODECS)}")
    elif kind == "mark":
        i, t = msg.get("i"), msg.get("t")
        if not isinstance(i, list) or not isinstance(t, list) or len(i) != len(t) or len(i) > MAX_MARKS:
            raise ValueError(f"mark: 'i' and 't' must be lists of equal length <= {MAX_MARKS}")
        if not all(_int(v, 0, 0xFFFFFFFF) for v in i) or not all(_number(v) for v in t):
            raise ValueError("mark: 'i' must hold frame indices and 't' finite times")
    elif kind == "pong":
        if not _number(msg.get("t0")) or not _number(msg.get("ts")):
            raise ValueError("pong: 't0' and 'ts' must be finite numbers")
    elif kind != "bye":
        raise ValueError(f"unknown control message type {kind[:40]!r}")
    return msg


@dataclass
class CallState:
    """Per-call (per peer connection) receiver state and counters."""

    decoder: PacketDecoder
    pack: int = 1
    fps: float = 25.0
    has_header: bool = False
    ended: bool = False
    messages: int = 0
    packets: int = 0
    before_header: int = 0
    corrupt: int = 0
    bad_control: int = 0  # malformed control messages (ignored)
    decoded: int = 0
    concealed: int = 0
    keyframes: int = 0
    keyframe_requests: int = 0
    highest: int = -1
    first: int | None = None
    delivered: set[int] = field(default_factory=set)  # indices decoded (not concealed)
    seen: set[int] = field(default_factory=set)  # indices received at all
    last_request: float = 0.0
    broken: bool = False  # a gap was seen and no keyframe has arrived since
    clock_offset: float = 0.0  # sender clock - receiver clock (s)
    rtt: float | None = None
    capture: OrderedDict[int, float] = field(default_factory=OrderedDict)  # frame index → sender capture
    classic_decoder: ClassicDecoder | None = None
    classic_bytes: int = 0
    link_bytes0: int = 0
    frame_step: int = 1  # coded frame i is camera frame i · frame_step (the stream header's)
    # the newest coded frame handed to the renderer: (index, expression (D,), pose (12,)), which the frames
    # between it and the next coded one are interpolated from
    last_rendered: tuple[int, np.ndarray, np.ndarray] | None = None
    # the quality guard's fallback pictures, composed over the renders (docs/guard.md)
    compositor: Compositor = field(default_factory=Compositor)
    fallback_packets: int = 0
    compose_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def lost(self) -> int:
        """Frame indices never received (counted up to the newest index seen)."""
        if self.first is None:
            return 0
        return max(0, self.highest - self.first + 1 - len(self.seen))


@dataclass
class InBetweenFrame:
    """A camera frame the sender stepped over (frame step m > 1), interpolated at the receiver between two
    coded frames (a :class:`DecodedFrameLike`; ``index`` is the later coded frame's)."""

    index: int
    expression: np.ndarray  # (D,)
    pose: np.ndarray  # (12,)
    is_key: bool = False
    concealed: bool = False


@dataclass
class RenderJob:
    """One frame for the render threads: what to render, its camera frame index (the order frames are shown
    in) and when it was captured (``after_s`` seconds after coded frame ``mark``'s capture)."""

    frame: DecodedFrameLike
    call: CallState
    camera: int
    mark: int
    after_s: float = 0.0


class Receiver:
    """Decode + render + view server. ``decoder_factory`` makes one decoder per call.

    With a frame step m > 1 in the stream and ``interpolate`` (the default), each coded frame also brings the
    m − 1 camera frames before it, interpolated from the previous coded frame as a file decoder does
    (:func:`nerfvc.features.upsample_features`), so the call is shown at the camera's rate; the k-th of them
    is shown (m − k) / fps after its capture at the earliest (docs/live.md)."""

    def __init__(
        self,
        decoder_factory: Callable[[], PacketDecoder],
        renderer: FrameRenderer,
        size: int = 256,
        token: str | None = None,
        record: bool = False,
        jpeg_quality: int = 85,
        render_threads: int = 1,
        view_token: str | None = None,
        adapt_size: bool = True,
        interpolate: bool = True,
    ) -> None:
        self.decoder_factory = decoder_factory
        self.interpolate = interpolate
        self.renderer = renderer  # with render_threads > 1 it must accept that many concurrent calls
        self.render_threads = max(1, int(render_threads))
        self.size = int(size)  # the display size; frames may render smaller (adapt_size)
        # below the display size when the renderers cannot keep up with the call's frame rate (docs/live.md)
        self.sizer = RenderSizeController(self.size, 25.0, self.render_threads) if adapt_size else None
        self._sizer_lock = threading.Lock()
        self.frames_below_display = 0  # frames rendered smaller than the display size and upscaled
        self._render_size_sum = 0
        self.token = token or new_token()  # the sender's: offers (and viewing)
        self.view_token = view_token or new_token()  # the viewers': page, /ws, /stats only
        if hmac.compare_digest(self.token.encode(), self.view_token.encode()):
            raise ValueError("the sender and viewer tokens must differ")
        self.record = record
        self.jpeg_quality = jpeg_quality
        self.pcs: set[Any] = set()
        self.call: CallState | None = None
        self.calls: list[CallState] = []
        # index → (expression, pose, concealed): the decoded features the renderer is given (record=True)
        self.features: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
        self.viewers: set[web.WebSocketResponse] = set()
        self._sending: dict[web.WebSocketResponse, bool] = {}
        self.payload = RateMeter()
        self.wire = RateMeter()
        self.rendered = RateMeter()
        self.classic_rate = RateMeter()
        self.classic_shown = RateMeter()
        self.latency = LatencyMeter()  # capture (sender) → rendered (receiver)
        self.classic_latency = LatencyMeter()
        self.view_rtt = LatencyMeter()  # sent to the page → page's display acknowledgement back
        self.render_time = LatencyMeter()
        self.frames_rendered = 0
        self.frames_interpolated = 0  # of them, camera frames the sender stepped over (interpolate)
        self.render_stamps: list[float] = []  # time.monotonic() at the end of each render
        self._jobs: list[RenderJob] = []  # frames waiting for a render thread, oldest first
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._classic_q: list[tuple[int, bytes, CallState]] = []
        self._classic_cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._seq = 0
        self._rendering = 0  # frames being rendered now
        self._published: dict[int, int] = {}  # id(call) → newest camera frame shown (older ones are dropped)
        self._publish_lock = threading.Lock()
        self._ws_tasks: set[asyncio.Future] = set()
        self._control_channels: dict[int, Any] = {}  # id(call) → control channel
        self._pc_of: dict[int, Any] = {}  # id(call) → peer connection
        self.port: int | None = None

    # -- server ------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application: ``GET /`` viewer, ``GET /ws``, ``GET /stats``, ``POST /offer``."""
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/stats", self._stats_http)
        app.router.add_post("/offer", self._offer)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start serving and the worker threads; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        targets = [(self._render_loop, f"nerfvc-render-{i}") for i in range(self.render_threads)]
        for target, name in [*targets, (self._classic_loop, "nerfvc-classic")]:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._tasks.append(asyncio.create_task(self._periodic()))
        return self.port

    async def stop(self) -> None:
        """Close calls, viewers and the server; stop the workers."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        with self._classic_cond:
            self._classic_cond.notify_all()
        for task in self._tasks:
            task.cancel()
        for pc in list(self.pcs):
            await pc.close()
        self.pcs.clear()
        for ws in list(self.viewers):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for t in self._threads:
            t.join(timeout=5)

    def _authorized(self, token: str | None) -> bool:
        """``token`` is the sender's (may offer a call)."""
        return token is not None and hmac.compare_digest(str(token).encode(), self.token.encode())

    def _may_view(self, token: str | None) -> bool:
        """``token`` is the viewers' or the sender's (may watch, never offer)."""
        if token is None:
            return False
        ok_view = hmac.compare_digest(str(token).encode(), self.view_token.encode())
        return ok_view or self._authorized(token)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if not self._may_view(request.query.get("token")):
            return web.Response(status=403, text="forbidden: open the viewer URL printed by `nerfvc receive`")
        html = resources.files("nerfvc.live").joinpath("viewer.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def _stats_http(self, request: web.Request) -> web.StreamResponse:
        if not self._may_view(request.query.get("token")):
            return web.Response(status=403, text="forbidden")
        return web.json_response(self.stats())

    async def _offer(self, request: web.Request) -> web.StreamResponse:
        """Signaling. The sender's token (``Authorization: Bearer``) is checked before the body is read;
        the offer must open data channels before it replaces the running call (a refused one keeps it)."""
        auth = request.headers.get("Authorization", "")
        if not self._authorized(auth[7:] if auth.startswith("Bearer ") else None):
            log.warning("refused an offer with a wrong or missing token from %s", request.remote)
            return web.Response(status=403, text="forbidden: wrong or missing sender token")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="expected a JSON offer")
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            return web.Response(status=400, text="expected {sdp, type: offer}")
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(rtc_configuration())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            accepted = pc.sctp is not None  # the offer opens data channels (the call's only transport)
        except Exception as e:  # aiortc raises many types on a bad SDP
            log.warning("refused an offer that does not parse: %s", e)
            accepted = False
        if not accepted:
            await pc.close()
            return web.Response(status=400, text="the offer does not open a data-channel call")
        for old in list(self.pcs):  # one call at a time: the accepted offer replaces the old call
            await old.close()
            self.pcs.discard(old)
        self.pcs.add(pc)
        call = CallState(decoder=self.decoder_factory())
        self.call = call
        self.calls.append(call)
        self.features.clear()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == MEDIA_LABEL:
                channel.on("message", lambda m: self._on_media(call, channel, m))
            elif channel.label == CONTROL_LABEL:
                self._control_channels[id(call)] = channel
                channel.on("message", lambda m: self._on_control(call, m))
            elif channel.label == CLASSIC_LABEL:
                channel.on("message", lambda m: self._on_classic(call, m))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.pcs.discard(pc)
                call.ended = True

        self._pc_of[id(call)] = pc
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    def _send_control(self, call: CallState, obj: dict[str, Any]) -> None:
        ch = self._control_channels.get(id(call))
        if ch is not None and ch.readyState == "open":
            ch.send(json.dumps(obj))

    # -- call messages -----------------------------------------------------------------------------------
    def _on_control(self, call: CallState, message: str | bytes) -> None:
        """A control message from the sender; a malformed one is counted (``bad_control``) and ignored."""
        try:
            msg = parse_control(message)
        except ValueError as e:
            call.bad_control += 1
            log.debug("malformed control message ignored: %s", e)
            return
        kind = msg["type"]
        if kind == "hello":
            try:
                header = call.decoder.read_header(base64.b64decode(msg["header"], validate=True))
            except Exception as e:
                log.error("stream header refused: %s", e)
                self._send_control(call, {"type": "error", "message": str(e)})
                return
            call.has_header = True
            call.frame_step = int(getattr(header, "frame_step", 1) or 1)
            call.fps = float(msg.get("fps") or 25.0)
            if self.sizer is not None:
                with self._sizer_lock:  # the frames to render per second
                    self.sizer.set_fps(call.fps / (1 if self.interpolate else call.frame_step))
            call.pack = int(msg.get("pack") or 1)
            codec = msg.get("classic")
            call.classic_decoder = ClassicDecoder(codec) if codec else None
            self._send_control(call, {"type": "ping", "t0": time.time()})
        elif kind == "mark":
            for i, t in zip(msg["i"], msg["t"]):
                call.capture[i] = float(t)
            while len(call.capture) > 2000:
                call.capture.popitem(last=False)
        elif kind == "pong":
            now = time.time()
            t0, ts = float(msg["t0"]), float(msg["ts"])
            rtt = now - t0
            if 0 <= rtt and (call.rtt is None or rtt <= call.rtt * 1.5):
                call.rtt = rtt
                call.clock_offset = ts - (t0 + now) / 2
        elif kind == "bye":
            call.ended = True

    def _on_media(self, call: CallState, channel: Any, message: bytes | str) -> None:
        if isinstance(message, str):
            return
        now = time.monotonic()
        call.messages += 1
        try:
            packets = [message] if call.pack == 1 else unpack_packets(message)
        except ValueError:
            call.corrupt += 1
            return
        size = sum(len(p) for p in packets)
        self.payload.add(size, now)
        self.wire.add(len(message) + WIRE_OVERHEAD_BYTES, now)
        if not call.has_header:
            call.before_header += len(packets)
            self._send_control(call, {"type": "header?"})
            return
        for packet in packets:
            call.packets += 1
            try:
                frame = call.decoder.decode(packet)
            except Exception as e:
                log.debug("bad packet: %s", e)
                call.corrupt += 1
                self._want_keyframe(call)
                continue
            if frame is None:  # a fallback packet of the sender's quality guard: no frame
                fallback = getattr(call.decoder, "fallback", [])
                with call.compose_lock:
                    call.compositor.add(fallback[call.fallback_packets :])
                call.fallback_packets = len(fallback)
                continue
            self._on_frame(call, frame)

    def _want_keyframe(self, call: CallState) -> None:
        call.broken = True
        now = time.monotonic()
        if now - call.last_request >= KEYFRAME_RETRY_S:
            call.last_request = now
            call.keyframe_requests += 1
            self._send_control(call, {"type": "keyframe"})

    def _on_frame(self, call: CallState, frame: DecodedFrameLike) -> None:
        idx = int(frame.index)
        if call.first is None:
            call.first = idx
        gap = idx > call.highest + 1 and call.highest >= 0
        late = idx <= call.highest
        call.highest = max(call.highest, idx)
        call.seen.add(idx)
        if frame.is_key:
            call.keyframes += 1
            call.broken = False
        if frame.concealed:
            call.concealed += 1
            self._want_keyframe(call)
        else:
            call.decoded += 1
            call.delivered.add(idx)
            if gap and not frame.is_key:
                self._want_keyframe(call)
        if self.record:
            self.features[idx] = (np.array(frame.expression), np.array(frame.pose), bool(frame.concealed))
        if not late:
            jobs = self._jobs_for(call, frame)
            with self._cond:
                if self._jobs:  # behind: no frames between this time, and of the coded frames still
                    # waiting only the newest stays (latest wins: the wait stays under two renders)
                    waiting = [j for j in self._jobs if not isinstance(j.frame, InBetweenFrame)]
                    jobs = [*waiting[-1:], jobs[-1]]
                self._jobs = jobs
                self._cond.notify_all()

    def _jobs_for(self, call: CallState, frame: DecodedFrameLike) -> list[RenderJob]:
        """The coded ``frame`` to render, after the camera frames between it and the previous coded frame
        when the stream steps over frames, ``interpolate`` is on and that frame went to the renderer."""
        m, idx = call.frame_step, int(frame.index)
        expression, pose = np.asarray(frame.expression), np.asarray(frame.pose)
        prev, call.last_rendered = call.last_rendered, (idx, expression, pose)
        jobs = []
        if self.interpolate and m > 1 and prev is not None and prev[0] == idx - 1:
            # (m + 1, D), (m + 1, 12): the two coded frames and the ones between
            code, poses = upsample_features(
                np.stack([prev[1], expression]), np.stack([prev[2], pose]), m, m + 1
            )
            for k in range(1, m):
                between = InBetweenFrame(idx, code[k], poses[k], concealed=bool(frame.concealed))
                jobs.append(RenderJob(between, call, (idx - 1) * m + k, idx - 1, k / call.fps))
        return [*jobs, RenderJob(frame, call, idx * m, idx)]

    def _on_classic(self, call: CallState, message: bytes | str) -> None:
        if isinstance(message, str) or len(message) < 4 or call.classic_decoder is None:
            return
        (idx,) = struct.unpack(">I", message[:4])
        call.classic_bytes += len(message) - 4
        self.classic_rate.add(len(message) - 4)
        with self._classic_cond:
            self._classic_q.append((idx, bytes(message[4:]), call))
            self._classic_cond.notify()

    # -- workers (threads: the event loop never renders) ---------------------------------------------------
    def _render_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._jobs and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                job = self._jobs.pop(0)
                self._rendering += 1
            frame, call = job.frame, job.call
            size = self.size
            render_size = self.render_size
            t = time.perf_counter()
            try:
                rgb = self.renderer.render(frame.expression, frame.pose, render_size, render_size)
                if self.sizer is not None:
                    with self._sizer_lock:
                        self.sizer.observe(render_size, time.perf_counter() - t)
                rgb = upscale(rgb, size)
                with call.compose_lock:
                    rgb = call.compositor.compose(job.camera, rgb)
            except Exception:
                log.exception("render failed")
                with self._cond:
                    self._rendering -= 1
                continue
            jpeg = _jpeg(rgb, self.jpeg_quality)
            with self._publish_lock:  # several render threads: never show a frame older than one shown
                if job.camera > self._published.get(id(call), -1):
                    self._published[id(call)] = job.camera
                    self._show(job, jpeg, size, render_size, t)
            with self._cond:
                self._rendering -= 1

    def _show(self, job: RenderJob, jpeg: bytes, size: int, render_size: int, started: float) -> None:
        """Count a rendered frame and send it to the viewers."""
        self.render_time.add(time.perf_counter() - started)
        self.frames_rendered += 1
        self.frames_interpolated += isinstance(job.frame, InBetweenFrame)
        self.frames_below_display += render_size < size
        self._render_size_sum += render_size
        if len(self.render_stamps) < 1_000_000:
            self.render_stamps.append(time.monotonic())
        self.rendered.add()
        latency = self._latency(job.call, job.mark, job.after_s)
        if latency is not None:
            self.latency.add(latency)
        meta = {
            "i": job.camera,
            "size": size,
            "render_size": render_size,
            "latency": latency,
            "concealed": bool(job.frame.concealed),
        }
        self._publish(PANEL_NERFVC, jpeg, meta)

    def _classic_loop(self) -> None:
        while not self._stop.is_set():
            with self._classic_cond:
                while not self._classic_q and not self._stop.is_set():
                    self._classic_cond.wait(0.5)
                if self._stop.is_set():
                    return
                items, self._classic_q = self._classic_q, []
            for idx, packet, call in items:
                try:
                    frames = call.classic_decoder.decode(packet) if call.classic_decoder else []
                except Exception as e:
                    log.debug("classic decode: %s", e)
                    continue
                for rgb in frames:
                    latency = self._latency(call, idx)
                    if latency is not None:
                        self.classic_latency.add(latency)
                    self.classic_shown.add()
                    size = self.size
                    meta = {"i": idx, "size": size, "latency": latency}
                    self._publish(PANEL_CLASSIC, _jpeg(_resize(rgb, size), self.jpeg_quality), meta)

    def _latency(self, call: CallState, idx: int, after_s: float = 0.0) -> float | None:
        """Capture → now (s) of what was captured ``after_s`` seconds after coded frame ``idx``; unmarked
        frames extrapolate from a mark ≤ 30 coded frames back."""
        for back in range(31):
            t = call.capture.get(idx - back)
            if t is not None:
                return time.time() - (t + back * call.frame_step / call.fps + after_s - call.clock_offset)
        return None

    def _publish(self, panel: int, jpeg: bytes, meta: dict[str, Any]) -> None:
        if self._loop is None or not self.viewers:
            return
        self._loop.call_soon_threadsafe(self._broadcast, panel, jpeg, meta)

    def _broadcast(self, panel: int, jpeg: bytes, meta: dict[str, Any]) -> None:
        self._seq += 1
        meta = dict(meta, seq=self._seq, sent=time.time())
        head = json.dumps(meta).encode()
        data = bytes([panel]) + struct.pack(">I", len(head)) + head + jpeg
        for ws in list(self.viewers):
            if self._sending.get(ws):  # a slow viewer: drop this frame for it rather than queue
                continue
            self._sending[ws] = True
            task = asyncio.ensure_future(self._send_ws(ws, data))
            self._ws_tasks.add(task)
            task.add_done_callback(self._ws_tasks.discard)

    async def _send_ws(self, ws: web.WebSocketResponse, data: bytes) -> None:
        try:
            await ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            self.viewers.discard(ws)
        finally:
            self._sending[ws] = False

    # -- viewers -----------------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._may_view(request.query.get("token")):
            return web.Response(status=403, text="forbidden")
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        self.viewers.add(ws)
        await ws.send_str(json.dumps({"type": "stats", **self.stats()}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if _int(data.get("size"), 16, 1024):
                    self.set_size(data["size"])
                if "shown" in data and _number(data.get("sent")):
                    self.view_rtt.add(time.time() - float(data["sent"]))
        finally:
            self.viewers.discard(ws)
            self._sending.pop(ws, None)
        return ws

    @property
    def render_size(self) -> int:
        """The size the next frame renders at: the display size, or less while the renderers fall behind."""
        return self.size if self.sizer is None else min(self.size, self.sizer.size)

    @property
    def busy(self) -> bool:
        """True while a decoded frame waits for the renderer or is being rendered."""
        return bool(self._jobs) or self._rendering > 0

    def set_size(self, size: int) -> None:
        """Change the display size (takes effect at the next frame; the render size restarts from it)."""
        if size in SIZES or 16 <= size <= 1024:
            self.size = int(size)
            if self.sizer is not None:
                with self._sizer_lock:
                    self.sizer.set_display_size(self.size)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            call = self.call
            if call is not None and not call.ended and int(time.time() * 2) % 2 == 0:
                self._send_control(call, {"type": "ping", "t0": time.time()})
                if call.has_header is False and call.messages:
                    self._send_control(call, {"type": "header?"})
            if self.viewers:
                text = json.dumps({"type": "stats", **self.stats()})
                for ws in list(self.viewers):
                    try:
                        await ws.send_str(text)
                    except (ConnectionError, RuntimeError):
                        self.viewers.discard(ws)

    # -- stats -------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Live numbers for the viewer and ``GET /stats``."""
        call = self.call
        msg_rate, payload_bps = self.payload.rate()
        _, wire_bps = self.wire.rate()
        render_fps, _ = self.rendered.rate()
        _, classic_bps = self.classic_rate.rate()
        classic_fps, _ = self.classic_shown.rate()
        lat = self.latency.median_ms()
        view = self.view_rtt.median_ms()
        out: dict[str, Any] = {
            "renderer": getattr(self.renderer, "label", type(self.renderer).__name__),
            "size": self.size,
            "render_size": self.render_size,
            "frames_below_display": self.frames_below_display,
            "payload_kbps": round(payload_bps / 1000, 3),
            "wire_kbps": round(wire_bps / 1000, 3),
            "messages_per_s": round(msg_rate, 2),
            "render_fps": round(render_fps, 2),
            "render_ms": self.render_time.median_ms(),
            "latency_ms": None if lat is None else round(lat, 1),  # capture → rendered
            "display_latency_ms": None if lat is None or view is None else round(lat + view / 2, 1),
            "classic_kbps": round(classic_bps / 1000, 3),
            "classic_fps": round(classic_fps, 2),
            "classic_latency_ms": self.classic_latency.median_ms(),
            "frames_rendered": self.frames_rendered,
            "frames_interpolated": self.frames_interpolated,
            "viewers": len(self.viewers),
        }
        if call is not None:
            out.update(
                connected=not call.ended,
                header=call.has_header,
                received=call.packets,
                decoded=call.decoded,
                delivered=len(call.delivered),
                lost=call.lost,
                concealed=call.concealed,
                corrupt=call.corrupt,
                bad_control=call.bad_control,
                keyframes=call.keyframes,
                keyframe_requests=call.keyframe_requests,
                fallback_packets=call.fallback_packets,
                frames_in_fallback=call.compositor.frames_in_fallback,
                highest_index=call.highest,
                rtt_ms=None if call.rtt is None else round(1000 * call.rtt, 2),
            )
            pc = self._pc_of.get(id(call))
            if pc is not None:
                from nerfvc.live.sender import _dtls_bytes

                out["link_bytes_received"] = _dtls_bytes(pc, "bytesReceived")
        return out

    def summary(self) -> dict[str, Any]:
        """End-of-call numbers including latency percentiles over the whole call."""
        s = self.stats()
        s["latency_p50_ms"] = percentile_ms(self.latency.all, 50)
        s["latency_p95_ms"] = percentile_ms(self.latency.all, 95)
        s["classic_latency_p50_ms"] = percentile_ms(self.classic_latency.all, 50)
        s["view_rtt_p50_ms"] = percentile_ms(self.view_rtt.all, 50)
        s["render_ms_p50"] = percentile_ms(self.render_time.all, 50)
        s["render_size_mean"] = (
            round(self._render_size_sum / self.frames_rendered, 1) if self.frames_rendered else None
        )
        return s
