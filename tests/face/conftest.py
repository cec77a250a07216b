"""Shared fixtures for the face tests: tracked landmarks of real clips and one small prepared dataset."""

from pathlib import Path

import pytest
from face_testdata import D9, GERMAN, track_clip

from nerfvc.camera import Camera
from nerfvc.face.model import DEFAULT_FOV_DEG


@pytest.fixture(scope="session")
def camera512() -> Camera:
    return Camera.from_fov(512, 512, DEFAULT_FOV_DEG)


@pytest.fixture(scope="session")
def german_track():
    """160 frames (every 2nd of the first 320 → 12.8 s of varied speech) of the German anchor at 512²."""
    return track_clip(GERMAN, 160, every=2)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """``prepare`` on 40 frames of the non-square d9 clip (exercises the auto crop)."""
    from nerfvc.face.prepare import prepare

    out = tmp_path_factory.mktemp("ds") / "d9"
    prepare(D9, out, max_frames=40, progress=False)
    return out
