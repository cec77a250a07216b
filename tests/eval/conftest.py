"""Shared fixtures for the evaluation tests: paths to the shared data and a few real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"
GERMAN = DATA / "clips" / "mimictalk_german_anchor_20s.mp4"
METRICS_REF = DATA / "metrics_ref"


def need(path: Path) -> Path:
    """Skip the test when a shared-data file is missing."""
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    return path


@pytest.fixture(scope="session")
def german() -> np.ndarray:
    """All 500 frames of the german clip (uint8 RGB, 512x512)."""
    from nerfvc.io.video import read_frame_range

    return read_frame_range(need(GERMAN))


@pytest.fixture(scope="session")
def face_frame(german) -> np.ndarray:
    """One 256x256 frame with a clearly visible face."""
    from nerfvc.eval.video import resize_frames

    return resize_frames(german[400:401], 256)[0]
