"""Fixtures for live-call tests: loopback-only ICE, the shared clip's frames and stand-in features."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerfvc.live.transport import use_loopback_only

CLIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "clips" / "mimictalk_may_5s.mp4"


@pytest.fixture(autouse=True)
def _loopback() -> None:
    use_loopback_only()


@pytest.fixture(scope="session")
def clip() -> tuple:
    """(frames, code (N,16), pose (N,12), fps) of the 5-second shared clip."""
    if not CLIP.exists():
        pytest.skip(f"shared clip missing: {CLIP}")
    from tests.live.standins import clip_features

    return clip_features(str(CLIP))
