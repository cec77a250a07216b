"""The guard over a whole sequence: the sender's fallback packets for a clip's decoded features
(:func:`guard_packets`, behind ``nerfvc encode --guard`` through
:meth:`nerfvc.pipeline.SenderPipeline.guard_stream` and ``nerfvc eval``'s ``nerfvc+guard``); the receiver
composes them with :class:`~nerfvc.guard.fallback.Compositor`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nerfvc.codec.decoder import FallbackPacket
from nerfvc.codec.framing import TYPE_FALLBACK, build_packet
from nerfvc.guard.fallback import Compositor, GuardConfig, SenderGuard

_ANY_FP = bytes(8)  # packet sizes do not depend on the fingerprint


class FrameRenderer(Protocol):
    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray: ...


def guard_packets(
    renderer: FrameRenderer,
    camera: np.ndarray,
    expression: np.ndarray,
    pose: np.ndarray,
    fps: float,
    config: GuardConfig | None = None,
) -> tuple[list[FallbackPacket], dict]:
    """The sender's guard over a clip: ``camera`` (N,H,W,3) uint8 the frames as the model camera crops them
    (any size ≥ the picture size), ``expression`` (N,D) / ``pose`` (N,12) the features the receiver decodes
    for each camera frame → the fallback packets (frame indices are camera frames) and
    ``{"fallback_bytes", "fallback_kbps", "pictures", "fired"}`` (bytes as framed in a stream)."""
    cfg = config or GuardConfig()
    if len(camera) != len(pose):
        raise ValueError(f"{len(camera)} camera frames for {len(pose)} decoded frames")
    guard = SenderGuard(cfg, fps)
    s = cfg.check_size
    packets: list[FallbackPacket] = []
    fired = 0
    for i in range(len(pose)):
        tiny = renderer.render(expression[i], pose[i], s, s)
        new, decision = guard.step(i, camera[i], tiny)
        packets += new
        fired += decision.fired
    nbytes = sum(len(build_packet(_ANY_FP, TYPE_FALLBACK, p.index, p.picture, p.alpha)) for p in packets)
    n = max(len(pose), 1)
    return packets, {
        "fallback_bytes": nbytes,
        "fallback_kbps": nbytes * 8 / (n / fps) / 1000,
        "pictures": sum(bool(p.picture) for p in packets),
        "fired": fired,
    }


def guarded_frames(
    renderer: FrameRenderer,
    camera: np.ndarray,
    expression: np.ndarray,
    pose: np.ndarray,
    rendered: np.ndarray,
    fps: float,
    config: GuardConfig | None = None,
) -> tuple[np.ndarray, dict]:
    """``nerfvc eval``'s ``nerfvc+guard``: ``camera`` (N,H,W,3) the frames the sender sees (at the scored
    size), ``expression``/``pose`` the decoded features, ``rendered`` (N,H,W,3) the receiver's renders of
    them → the frames shown with the guard, and :func:`guard_packets`' summary plus ``fallback_share``."""
    packets, info = guard_packets(renderer, camera, expression, pose, fps, config)
    comp = Compositor()
    comp.add(packets)
    shown = np.stack([comp.compose(i, frame) for i, frame in enumerate(rendered)])
    info["fallback_share"] = comp.frames_in_fallback / max(len(rendered), 1)
    return shown, info
