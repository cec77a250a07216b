"""Rendering in a worker process gives the same pixels as in-process, and failures are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.workers import ProcessRenderer, RenderWorkerError


def _failing_factory() -> DebugDiscRenderer:
    raise InputError("no such model")


def test_process_renderer_matches_in_process_and_reports_failures():
    code, pose = np.array([0.3, -0.2, 0.5], np.float32), [*np.eye(3).ravel().tolist(), 0, 0, 3]
    r = ProcessRenderer(DebugDiscRenderer)
    try:
        assert "worker process" in r.label
        out = r.render(code, np.array(pose, np.float32), 96, 64)
        assert out.shape == (64, 96, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, DebugDiscRenderer().render(code, np.array(pose), 96, 64))
    finally:
        r.close()
    with pytest.raises(RenderWorkerError, match="no such model"):
        ProcessRenderer(_failing_factory)
