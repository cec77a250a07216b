"""Test stand-ins for the real pieces (codec, tracker), so that a call runs without a model. Not product code.

- :class:`StandInEncoder` / :class:`StandInDecoder`: a tiny keyframe/delta packet codec with the same
  interface and loss semantics as ``nerfvc.pipeline.FeatureEncoder`` / ``FeatureDecoder`` (a delta packet
  needs the previous frame; after a gap the decoder conceals — holds the last output — until a keyframe).
- :func:`clip_features`: per-frame "features" from a clip's pixels (block means + intensity centroid), so a
  call runs from a real video without the face tracker.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from nerfvc.live.interfaces import SourceFrame

MAGIC = b"SIH1"
STEP = 0.01


@dataclass
class Decoded:
    index: int
    expression: np.ndarray
    pose: np.ndarray
    is_key: bool
    concealed: bool


class StandInEncoder:
    def __init__(self, dim: int, fingerprint: str = "0123456789abcdef", keyframe_interval: int = 25) -> None:
        self.dim, self.fingerprint, self.keyframe_interval = dim, fingerprint, keyframe_interval
        self.index = 0
        self._prev: np.ndarray | None = None
        self._force = True
        self._since_key = 0
        self.last_reconstruction: tuple[np.ndarray, np.ndarray] | None = None
        self.key_indices: list[int] = []

    def header(self) -> bytes:
        return MAGIC + bytes.fromhex(self.fingerprint) + struct.pack(">H", self.dim)

    def request_keyframe(self) -> None:
        self._force = True

    def encode(self, expression: np.ndarray, pose: np.ndarray, force_key: bool = False) -> bytes:
        vec = np.concatenate(
            [np.asarray(expression, np.float64).ravel(), np.asarray(pose, np.float64).ravel()]
        )
        q = np.round(vec / STEP).astype(np.int64)
        key = force_key or self._force or self._prev is None or self._since_key >= self.keyframe_interval
        if key:
            body = q.astype(">i4").tobytes()
            self._since_key, self._force = 0, False
            self.key_indices.append(self.index)
        else:
            body = (q - self._prev).astype(">i2").tobytes()
        self._since_key += 1
        self._prev = q
        rec = (q * STEP).astype(np.float32)
        self.last_reconstruction = (rec[: self.dim], rec[self.dim :])
        pkt = struct.pack(">BI", 1 if key else 0, self.index) + body
        self.index += 1
        return pkt + struct.pack(">I", zlib.crc32(pkt))


class StandInDecoder:
    def __init__(self, fingerprint: str = "0123456789abcdef") -> None:
        self.fingerprint = fingerprint
        self.dim: int | None = None
        self._prev: np.ndarray | None = None
        self._prev_index = -1
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def read_header(self, data: bytes) -> int:
        if data[:4] != MAGIC or data[4:12] != bytes.fromhex(self.fingerprint):
            raise ValueError("not a stand-in stream for this model")
        (self.dim,) = struct.unpack(">H", data[12:14])
        return self.dim

    def decode(self, packet: bytes) -> Decoded:
        if len(packet) < 9 or zlib.crc32(packet[:-4]) != struct.unpack(">I", packet[-4:])[0]:
            raise ValueError("bad packet")
        key, index = struct.unpack(">BI", packet[:5])
        body = packet[5:-4]
        if key:
            q = np.frombuffer(body, ">i4").astype(np.int64)
        elif self._prev is not None and index == self._prev_index + 1:
            q = self._prev + np.frombuffer(body, ">i2").astype(np.int64)
        else:  # reference lost: hold the last output until a keyframe
            self._prev = None
            expression, pose = (
                self._last if self._last else (np.zeros(self.dim or 0, np.float32), np.zeros(12, np.float32))
            )
            return Decoded(index, expression, pose, False, True)
        self._prev, self._prev_index = q, index
        rec = (q * STEP).astype(np.float32)
        self._last = (rec[: self.dim], rec[self.dim :])
        return Decoded(index, self._last[0], self._last[1], bool(key), False)


def clip_features(path: str, size: int = 64) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, float]:
    """(frames, code (N,16), pose (N,12), fps) of a clip; features from 4×4 block means and the centroid."""
    container = av.open(path)
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 25)
    frames, codes, poses = [], [], []
    for f in container.decode(stream):
        rgb = f.to_ndarray(format="rgb24")
        frames.append(rgb)
        g = f.reformat(size, size, "gray").to_ndarray().astype(np.float64) / 255
        codes.append(g.reshape(4, size // 4, 4, size // 4).mean(axis=(1, 3)).ravel() * 4 - 2)
        ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
        w = g / g.sum()
        pose = [*np.eye(3).ravel().tolist(), float((w * xs).sum()), float((w * ys).sum()), 1.0]
        pose[2], pose[5] = 4 * pose[9], 4 * pose[10]
        poses.append(pose)
    container.close()
    return frames, np.array(codes, np.float32), np.array(poses, np.float32), fps


class ArraySource:
    """A FeatureSource over precomputed arrays (paced by the sender)."""

    def __init__(
        self,
        expression: np.ndarray,
        pose: np.ndarray,
        fps: float,
        images: list[np.ndarray] | None = None,
        crops: list[np.ndarray] | None = None,
        frame_step: int = 1,
    ):
        self.expression, self.pose, self.fps, self.images, self.crops = expression, pose, fps, images, crops
        self.frame_step = frame_step  # every m-th camera frame is sent, at its camera time (as TrackedSource)

    def __iter__(self) -> Iterator[SourceFrame]:
        for i in range(0, len(self.expression), self.frame_step):
            image = self.images[i] if self.images is not None else None
            crop = self.crops[i] if self.crops is not None else None
            yield SourceFrame(i / self.fps, self.expression[i], self.pose[i], image, crop=crop)
