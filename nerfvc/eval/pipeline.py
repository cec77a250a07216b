"""nerfvc itself as a system under test: track → encode → decode → render, at several rates and sizes, each
hop through the MODEL's :class:`~nerfvc.pipeline.SenderPipeline` / :class:`~nerfvc.pipeline.ReceiverPipeline`
(so an evaluation measures exactly what ``nerfvc encode`` sends and ``nerfvc decode`` renders)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nerfvc.codec.framing import HEADER_SIZE, StreamHeader
from nerfvc.pipeline import FeatureClip, ReceiverPipeline, SenderPipeline


@dataclass
class DecodedPoint:
    """One nerfvc rate point: the real stream size and the features the receiver decoded."""

    kbps: float  # whole stream (header, framing, keyframes) × 8 / duration
    bits_per_frame: float
    expression: np.ndarray  # (N, E) decoded, in the NeRF's expression space
    pose: np.ndarray  # (N, 12)
    label: str
    frame_step: int  # every frame_step-th camera frame coded, the others interpolated


def track_frames(sender: SenderPipeline, frames: np.ndarray, fps: float) -> tuple[np.ndarray, FeatureClip]:
    """Track ``frames`` (N,H,W,3) with the model's face model as ``nerfvc encode`` tracks a video → the
    frames cropped to the model camera's aspect (N,h,w,3) (the reference to score against) and the clip's
    features (N,D) and poses (N,12)."""
    timed = ((frame, i / fps) for i, frame in enumerate(tqdm(frames, desc="track", leave=False)))
    clip = sender.track_clip(timed, "test frames", keep_frames=True)
    assert clip.frames is not None  # kept
    return clip.frames, clip


def code_rate_points(
    sender: SenderPipeline,
    receiver: ReceiverPipeline,
    expression: np.ndarray,
    pose: np.ndarray,
    fps: float,
    kbps_targets: Sequence[float],
    frames_per_packet: int = 1,
    camera: np.ndarray | None = None,
) -> list[DecodedPoint]:
    """Encode the features ``(N, D)`` at each target rate with the real codec, decode them, count the real
    bytes. ``frames_per_packet`` > 1 shares packet framing between frames as ``nerfvc encode`` does for
    files (a live call would wait that many frames before sending). ``camera`` (N,H,W,3): the frames the
    sender saw, for the frame step chosen by rendering as ``nerfvc encode VIDEO`` chooses it (None: by the
    rule alone, as for a features file).

    With an expression embedding in the model, its code is what is sent and the decoded code is expanded
    back to the NeRF's expression (by the pipelines), as ``nerfvc encode`` / ``nerfvc decode`` do.
    """
    points = []
    n = len(expression)
    for target in kbps_targets:
        data = sender.encode_stream(
            expression, pose, fps, camera, receiver, kbps=target, frames_per_packet=frames_per_packet
        )
        decoded = receiver.decode_stream(data)
        if len(decoded.pose) != n:
            raise RuntimeError(f"decoded {len(decoded.pose)} frames of {n}")
        bits = len(data) * 8 / n
        label = f"target {target:g} kbps" + (
            f", {frames_per_packet} fr/packet" if frames_per_packet > 1 else ""
        )
        step = StreamHeader.from_bytes(data[:HEADER_SIZE]).frame_step
        points.append(DecodedPoint(bits * fps / 1000, bits, decoded.expression, decoded.pose, label, step))
    return points


def render_sequence(
    receiver: ReceiverPipeline, expression: np.ndarray, pose: np.ndarray, size: int
) -> np.ndarray:
    """Render every frame's features ``(N, D)`` and pose ``(N, 12)`` at ``size``×``size`` → (N, size, size, 3)
    uint8."""
    out = np.empty((len(expression), size, size, 3), np.uint8)
    for i in tqdm(range(len(expression)), desc=f"render {size}", leave=False):
        out[i] = receiver.render(expression[i], pose[i], size, size)
    return out
