"""Rendering in a worker process gives the same pixels as in-process, and failures are clear errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.workers import ProcessRenderer, RendererPool, RenderWorkerError
from tests.live.helpers import StampingRenderer

pytestmark = pytest.mark.realtime  # render worker processes: `make test` runs these alone, after the rest


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


def test_renderer_pool_renders_two_frames_at_once(tmp_path):
    code, pose = np.array([0.3, -0.2, 0.5], np.float32), np.array([*np.eye(3).ravel(), 0, 0, 3], np.float32)
    log = tmp_path / "renders.log"
    pool = RendererPool(2, StampingRenderer, str(log), 0.3)  # each render sleeps 0.3 s
    try:
        assert len(pool) == 2 and "x2" in pool.label
        out: list[np.ndarray] = []
        job = lambda: out.append(pool.render(code, pose, 32, 24))  # noqa: E731
        threads = [threading.Thread(target=job) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(out) == 2
        np.testing.assert_array_equal(out[0], DebugDiscRenderer().render(code, pose, 32, 24))
        stamps = [line.split() for line in log.read_text().splitlines()]
        assert len({pid for pid, _, _ in stamps}) == 2  # one frame in each worker process
        starts, ends = [float(s) for _, s, _ in stamps], [float(e) for _, _, e in stamps]
        assert max(starts) < min(ends)  # the two renders overlapped in time
    finally:
        pool.close()
