"""What a receiver gets back: a clip's features through the real encoder and decoder at a target rate."""

from __future__ import annotations

import numpy as np

from nerfvc.codec.decoder import decode_stream
from nerfvc.codec.encoder import encode_stream
from nerfvc.codec.tables import CodecTables
from nerfvc.face.eyes import EyeApertures

# the stream never leaves the process, so any well-formed model fingerprint will do
ROUNDTRIP_FINGERPRINT = "0" * 16


def coded_features(
    tables: CodecTables,
    code: np.ndarray,
    pose: np.ndarray,
    kbps: float,
    fps: float = 25.0,
    eyes: EyeApertures | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``code (N,D)``, ``pose (N,12)`` coded at ``kbps`` (rate control as ``nerfvc encode``,
    single-frame packets as in a live call; winks kept with ``eyes``) and decoded → the receiver's
    ``code (N,D)``, ``pose (N,12)``."""
    data = encode_stream(tables, ROUNDTRIP_FINGERPRINT, code, pose, fps, kbps=kbps, eyes=eyes)
    decoded, decoded_pose, _ = decode_stream(data, tables, ROUNDTRIP_FINGERPRINT)
    return decoded, decoded_pose
