"""The receiving end of a MODEL: ``.nvc`` packets → decoded code → the NeRF's features → frames at any size.

One :class:`ReceiverPipeline` per MODEL directory owns its codec tables + fingerprint, the optional
embedding (the decoded code is expanded back to the NeRF's expression here, and only here) and a renderer
built on first use. ``nerfvc decode``, ``nerfvc eval`` and the live receiver decode and render through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.codec.decoder import FallbackPacket, StreamDecoder, StreamReport, decode_stream
from nerfvc.codec.framing import StreamHeader
from nerfvc.guard.fallback import Compositor
from nerfvc.pipeline.model import ModelCodec

if TYPE_CHECKING:
    from nerfvc.render.renderer import Renderer


@dataclass
class DecodedFeatures:
    """One decoded frame (a :class:`nerfvc.live.interfaces.DecodedFrameLike`)."""

    index: int
    code: np.ndarray  # (C,) float32: what was sent
    expression: np.ndarray  # (D,) float32: the NeRF's input (the code expanded by the embedding, if any)
    pose: np.ndarray  # (12,) float32
    is_key: bool
    concealed: bool  # a prediction: the packet or its reference was lost


class FeatureDecoder:
    """Live receiver half (a :class:`nerfvc.live.interfaces.PacketDecoder`): packet → the NeRF's features."""

    def __init__(self, decoder: StreamDecoder, codec: ModelCodec) -> None:
        self.decoder = decoder
        self.codec = codec

    def read_header(self, data: bytes) -> StreamHeader:
        """Check the stream header against the model (:meth:`nerfvc.codec.StreamDecoder.read_header`)."""
        return self.decoder.read_header(data)

    def decode(self, packet: bytes) -> DecodedFeatures | None:
        """Decode one packet → its (last) frame, or None for a packet without one (the quality guard's
        fallback packets, kept in :attr:`fallback`); raises :class:`~nerfvc.errors.BitstreamError` if it is
        damaged."""
        frames = self.decoder.decode_frames(packet)
        if not frames:
            return None
        f = frames[-1]
        expression = self.codec.to_expression(f.code[None])[0]
        return DecodedFeatures(f.index, f.code, expression, f.pose, f.is_key, f.concealed)

    @property
    def fallback(self) -> list[FallbackPacket]:
        """The fallback packets received so far, in arrival order (docs/guard.md)."""
        return self.decoder.fallback


@dataclass
class DecodedStream:
    """A whole decoded stream."""

    code: np.ndarray  # (N, C) float32: what was sent
    expression: np.ndarray  # (N, D) float32: the NeRF's input (the code itself without an embedding)
    pose: np.ndarray  # (N, 12) float32
    report: StreamReport  # decoded / concealed frames, damage, the header

    @property
    def valid(self) -> np.ndarray:
        """``(N,)`` bool: False for the frames that are concealment, not what was sent."""
        valid = self.report.valid
        return valid if valid is not None else np.ones(len(self.pose), bool)

    @property
    def fps(self) -> float:
        """The stream's frame rate (from its header, which :func:`~nerfvc.codec.decode_stream` reads)."""
        header = self.report.header
        return header.fps if header is not None else 0.0


class ReceiverPipeline:
    """A MODEL's receiver: packets or whole streams → the NeRF's features → frames at any size."""

    def __init__(
        self, model_dir: str | Path, codec: ModelCodec, device: str = "cpu", references: bool = True
    ) -> None:
        self.model_dir = Path(model_dir)
        self.codec = codec
        self.device = device
        self.references = references  # blend the model's reference frames into the head (if it has them)
        self._renderer: Renderer | None = None

    @classmethod
    def from_model_dir(
        cls, model: str | Path, device: str = "cpu", references: bool = True
    ) -> ReceiverPipeline:
        """The receiver of a MODEL directory (files verified against ``model.json``); the renderer is
        loaded on first use (``references``: with the model's reference texture, when it has one)."""
        return cls(model, ModelCodec.from_model_dir(model), device, references)

    # -- packets → features ------------------------------------------------------------------------------
    def to_expression(self, code: np.ndarray) -> np.ndarray:
        """Decoded codes ``(N, C)`` → the NeRF's features ``(N, D)`` (the embedding's expansion, if any)."""
        return self.codec.to_expression(code)

    def decode_stream(self, data: bytes) -> DecodedStream:
        """Decode a whole ``.nvc`` stream (damage is concealed and reported, see
        :func:`nerfvc.codec.decode_stream`)."""
        code, pose, report = decode_stream(data, self.codec.tables, self.codec.fingerprint)
        return DecodedStream(code, self.to_expression(code), pose, report)

    def packet_decoder(self) -> FeatureDecoder:
        """A fresh per-packet decoder (one per live call)."""
        return FeatureDecoder(StreamDecoder(self.codec.tables, self.codec.fingerprint), self.codec)

    # -- features → frames -------------------------------------------------------------------------------
    def renderer(self) -> Renderer:
        """The person's NeRF renderer (loaded, and its files verified, on the first call)."""
        if self._renderer is None:
            from nerfvc.render.renderer import Renderer  # torch + the NeRF: only when frames are rendered

            self._renderer = Renderer.from_model_dir(self.model_dir, self.device, references=self.references)
        return self._renderer

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        """One frame's features ``(D,)`` and pose ``(12,)`` → uint8 RGB ``(height, width, 3)``."""
        return self.renderer().render(expression, pose, width, height)

    def frame_size(self, size: str | int | None) -> tuple[int, int]:
        """``(width, height)`` for ``size``: S (longer side, the camera's aspect kept), ``"WxH"``, or None
        (the camera's own)."""
        from nerfvc.train.dataset import parse_size

        camera = self.renderer().camera
        return parse_size(size, camera.width, camera.height)

    def write_video(
        self,
        output: str | Path,
        expression: np.ndarray,
        pose: np.ndarray,
        size: str | int | None,
        fps: float,
        fallback: list[FallbackPacket] | None = None,
    ) -> str:
        """Render features ``(N, D)`` and poses ``(N, 12)`` at ``size`` into an mp4, the quality guard's
        ``fallback`` packets (a decoded stream's ``report.fallback``) composed over the renders → a one-line
        summary."""
        width, height = self.frame_size(size)
        comp = Compositor()
        comp.add(fallback or [])
        msg = self.renderer().write_video(output, expression, pose, width, height, fps, comp.compose)
        return msg + (f", {comp.frames_in_fallback} frames with a fallback picture" if fallback else "")
