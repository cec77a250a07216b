"""A stand-in for ``nerfvc.face.tracker.FaceTracker`` (mediapipe finds no face in synthetic frames)."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from nerfvc.features import FaceFeatures


def fake_tracker(
    monkeypatch: pytest.MonkeyPatch,
    expression: np.ndarray,
    pose: np.ndarray,
    ok: list[bool] | None = None,
    torso: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Make ``FaceTracker.from_dir`` return a tracker whose i-th ``track`` call gives frame i's
    ``expression (N,E)``, ``pose (N,12)`` and ``torso (N,2)``; where ``ok[i]`` is False it repeats the last
    tracked frame's values (zeros before the first), as the real tracker does. ``frame_for_camera`` crops
    the centred square. Returns the ``from_dir`` calls (path and keyword arguments)."""
    calls: list[dict[str, Any]] = []
    ok = [True] * len(pose) if ok is None else ok

    class FakeTracker:
        def __init__(self) -> None:
            self.i = 0
            self.last = FaceFeatures(
                np.zeros_like(expression[0]), np.zeros_like(pose[0]), np.zeros((478, 3)), False
            )

        @classmethod
        def from_dir(cls, path: Any, **kwargs: Any) -> FakeTracker:
            calls.append({"path": str(path), **kwargs})
            return cls()

        def frame_for_camera(self, frame: np.ndarray) -> np.ndarray:
            h, w = frame.shape[:2]
            s = min(h, w)
            return frame[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]

        def track(self, frame: np.ndarray, timestamp: float | None = None) -> FaceFeatures:
            i, self.i = self.i, self.i + 1
            shift = None if torso is None else torso[i]
            if ok[i]:
                self.last = FaceFeatures(expression[i], pose[i], np.zeros((478, 3), np.float32), True)
            last = self.last
            return FaceFeatures(last.expression, last.pose, last.landmarks, bool(ok[i]), shift)

        def __enter__(self) -> FakeTracker:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    module = types.ModuleType("nerfvc.face.tracker")
    module.FaceTracker = FakeTracker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nerfvc.face.tracker", module)
    return calls
