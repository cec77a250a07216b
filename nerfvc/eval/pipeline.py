"""nerfvc itself as a system under test: track → encode → decode → render, at several rates and sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm


@dataclass
class DecodedPoint:
    """One nerfvc rate point: the real stream size and the features the receiver decoded."""

    kbps: float  # whole stream (header, framing, keyframes) × 8 / duration
    bits_per_frame: float
    expression: np.ndarray  # (N, E) decoded, in the NeRF's expression space
    pose: np.ndarray  # (N, 12)
    label: str


def track_frames(
    model_dir: str | Path, frames: np.ndarray, fps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track ``frames`` (N,H,W,3) with the model's face model → cropped frames, model inputs (N,E+T)
    (expression, then the torso shift if the model has one), pose (N,12).

    Frames are cropped to the model camera's aspect ratio the way the sender crops them.
    """
    from nerfvc.face.tracker import FaceTracker
    from nerfvc.features import model_input
    from nerfvc.modeldir import model_torso_dims

    cropped, expr, pose = [], [], []
    torso_dims = model_torso_dims(model_dir)
    with FaceTracker.from_dir(model_dir) as tracker:
        for i, frame in enumerate(tqdm(frames, desc="track", leave=False)):
            f = tracker.track(frame, i / fps)
            cropped.append(tracker.frame_for_camera(frame))
            expr.append(model_input(f.expression, f.torso, torso_dims))
            pose.append(f.pose)
    return np.stack(cropped), np.stack(expr).astype(np.float32), np.stack(pose).astype(np.float32)


def code_rate_points(
    model_dir: str | Path,
    expression: np.ndarray,
    pose: np.ndarray,
    fps: float,
    kbps_targets: Sequence[float],
    frames_per_packet: int = 1,
) -> list[DecodedPoint]:
    """Encode the features at each target rate with the real codec, decode them, count the real bytes.
    ``frames_per_packet`` > 1 shares packet framing between frames as ``nerfvc encode`` does for files
    (a live call would wait that many frames before sending).

    With an expression embedding in the model, its code is what is sent and the decoded code is expanded
    back to the NeRF's expression, as ``nerfvc encode`` / ``nerfvc decode`` do.
    """
    from nerfvc.codec.bitstream import decode_stream, encode_stream
    from nerfvc.codec.tables import load_model_tables
    from nerfvc.embed.train import load_model_embedding

    tables, fingerprint = load_model_tables(model_dir)
    embedding = load_model_embedding(model_dir)
    code = expression
    if embedding is not None:
        from nerfvc.embed.train import encode_expressions

        code = encode_expressions(embedding, expression)
    points = []
    n = len(expression)
    for target in kbps_targets:
        data = encode_stream(
            tables, fingerprint, code, pose, fps=fps, kbps=target, frames_per_packet=frames_per_packet
        )
        code_hat, pose_hat, _ = decode_stream(data, tables, fingerprint)
        if len(code_hat) != n:
            raise RuntimeError(f"decoded {len(code_hat)} frames of {n}")
        expr_hat = code_hat
        if embedding is not None:
            from nerfvc.embed.train import decode_codes

            expr_hat = decode_codes(embedding, code_hat)
        bits = len(data) * 8 / n
        label = f"target {target:g} kbps" + (
            f", {frames_per_packet} fr/packet" if frames_per_packet > 1 else ""
        )
        points.append(DecodedPoint(bits * fps / 1000, bits, expr_hat, pose_hat, label))
    return points


def render_sequence(renderer, expression: np.ndarray, pose: np.ndarray, size: int) -> np.ndarray:
    """Render every frame at ``size``×``size`` → (N, size, size, 3) uint8."""
    out = np.empty((len(expression), size, size, 3), np.uint8)
    for i in tqdm(range(len(expression)), desc=f"render {size}", leave=False):
        out[i] = renderer.render(expression[i], pose[i], size, size)
    return out
