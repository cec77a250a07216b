"""Rendering in a worker process gives the same pixels as in-process, and failures are clear errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.workers import ProcessRenderer, RendererPool, RenderWorkerError


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


def test_renderer_pool_renders_two_frames_at_once():
    code, pose = np.array([0.3, -0.2, 0.5], np.float32), np.array([*np.eye(3).ravel(), 0, 0, 3], np.float32)
    pool = RendererPool(2, DebugDiscRenderer, 0.3)  # each render sleeps 0.3 s
    try:
        assert len(pool) == 2 and "x2" in pool.label
        out: list[np.ndarray] = []
        job = lambda: out.append(pool.render(code, pose, 32, 24))  # noqa: E731
        threads = [threading.Thread(target=job) for _ in range(2)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        assert len(out) == 2 and elapsed < 0.55  # in parallel: one serial pair takes 0.6 s
        np.testing.assert_array_equal(out[0], DebugDiscRenderer().render(code, pose, 32, 24))
    finally:
        pool.close()
