"""The small interfaces the live call is built from, so transport, signaling, viewer and stats do not depend
on the tracker, codec or renderer implementations.

The live call speaks the NeRF's features (expression, pose) at both ends; what crosses the channel in
between (the embedding's code, when the model has one) is the pipeline's business. The real pieces come from
the MODEL's :class:`~nerfvc.pipeline.SenderPipeline` and :class:`~nerfvc.pipeline.ReceiverPipeline` (wired
in by :mod:`nerfvc.live.adapters` and :mod:`nerfvc.live.commands`); tests use trivial stand-ins.
``DebugDiscRenderer`` is a *debug* renderer (draws the decoded pose as a coloured disc) for exercising the
call without a trained model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class SourceFrame:
    """One captured frame's features at the sender."""

    timestamp: float  # s from the source's start (media time; paces the sender)
    expression: np.ndarray  # (D,) float32: the model's features (expression, then the torso shift if any)
    pose: np.ndarray  # (12,) float32: [R row-major | t]
    image: np.ndarray | None = None  # uint8 RGB (H, W, 3), only needed by the classic-codec fallback
    capture_time: float | None = None  # time.time() when the frame was captured; None: the sender paces
    # the source by ``timestamp`` and takes the scheduled time as the capture time
    crop: np.ndarray | None = None  # uint8 RGB cropped to the model camera (shrunk), for the quality guard


@runtime_checkable
class FeatureSource(Protocol):
    """Frames with their features, in capture order. ``next()`` may block (tracking); it runs in a thread.

    A source that paces itself (camera, or a file read at its frame rate) sets ``capture_time`` on each
    frame; otherwise the sender sleeps until each frame's ``timestamp`` is due.
    """

    fps: float

    def __iter__(self) -> Iterator[SourceFrame]: ...


@runtime_checkable
class PacketEncoder(Protocol):
    """Sender half of the codec (``SenderPipeline.stream_encoder`` → ``nerfvc.pipeline.FeatureEncoder``).

    Optional extras used when present: ``last_reconstruction -> (expression, pose)`` (what the decoder will
    output for the last packet) and ``adapt(packet_bits)`` (live rate control).
    """

    def header(self) -> bytes: ...

    def encode(self, expression: np.ndarray, pose: np.ndarray, force_key: bool = False) -> bytes: ...

    def request_keyframe(self) -> None: ...


class DecodedFrameLike(Protocol):
    """What :meth:`PacketDecoder.decode` returns (``nerfvc.pipeline.DecodedFeatures`` fits)."""

    index: int
    expression: np.ndarray  # (D,) the NeRF's input (the embedding's code already expanded)
    pose: np.ndarray
    is_key: bool
    concealed: bool


@runtime_checkable
class PacketDecoder(Protocol):
    """Receiver half of the codec (``ReceiverPipeline.packet_decoder`` → ``nerfvc.pipeline.FeatureDecoder``).

    ``decode`` raises an exception (``BitstreamError``) on a damaged packet; the receiver counts it as lost.
    It returns None for a packet without a frame (a fallback packet of the quality guard); a decoder that
    has them lists the fallback packets received so far in ``fallback``.
    """

    def read_header(self, data: bytes) -> Any: ...

    def decode(self, packet: bytes) -> DecodedFrameLike | None: ...


@runtime_checkable
class FrameRenderer(Protocol):
    """Features → pixels at any size (``ReceiverPipeline.renderer()``, a ``nerfvc.render.Renderer``). Called
    from a worker thread."""

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray: ...


class DebugDiscRenderer:
    """DEBUG renderer, not the product: draws the decoded pose as a disc whose position follows the head's
    rotation and whose colour follows the first expression dimensions, over a gradient background.

    It lets the transport, viewer and stats be tested and benchmarked without a trained NeRF. ``delay``
    (s) simulates a slower renderer.
    """

    label = "DEBUG disc renderer (not a NeRF)"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = float(delay)

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        """Draw a ``(height, width, 3)`` uint8 frame for the given features."""
        import time

        if self.delay:
            time.sleep(self.delay)
        code = np.asarray(expression, np.float64).reshape(-1)
        pose = np.asarray(pose, np.float64).reshape(-1)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        img = np.empty((height, width, 3), np.float32)
        img[..., 0] = 40 + 60 * xs / max(width - 1, 1)
        img[..., 1] = 40 + 60 * ys / max(height - 1, 1)
        img[..., 2] = 90
        # The rotation's third column is the head's forward axis in camera space: its x/y move the disc.
        fx, fy = (pose[2], pose[5]) if pose.size >= 9 else (0.0, 0.0)
        cx = width * (0.5 + 0.35 * float(np.tanh(2 * fx)))
        cy = height * (0.5 + 0.35 * float(np.tanh(2 * fy)))
        r = 0.25 * min(width, height) * (1 + 0.3 * float(np.tanh(code[0] if code.size else 0.0)))
        colour = 127.5 * (1 + np.tanh(np.resize(code[:3] if code.size else np.zeros(3), 3)))
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        img[inside] = colour
        return np.clip(img, 0, 255).astype(np.uint8)
