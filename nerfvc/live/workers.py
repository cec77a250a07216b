"""Rendering in separate processes, so a Python-heavy renderer cannot hold the receiver's GIL.

:class:`ProcessRenderer` is a :class:`~nerfvc.live.interfaces.FrameRenderer` that forwards each call to a
child process (``spawn``) which builds the real renderer with ``factory(*args)``. The receiver's render
thread blocks on the pipe (GIL released) while the child renders. :class:`RendererPool` runs several such
workers so that several frames render at once (one per core: small per-frame tensors parallelise poorly
inside one frame).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from nerfvc.errors import NerfvcError


class RenderWorkerError(NerfvcError):
    """The render process failed to start or died."""


def _serve(conn: Any, factory: Callable[..., Any], args: tuple) -> None:
    try:
        renderer = factory(*args)
        conn.send(("ready", getattr(renderer, "label", type(renderer).__name__)))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        expression, pose, width, height = msg
        try:
            conn.send(("ok", np.ascontiguousarray(renderer.render(expression, pose, width, height))))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class ProcessRenderer:
    """A renderer living in a child process. ``factory`` and ``args`` must be picklable (top-level)."""

    def __init__(self, factory: Callable[..., Any], *args: Any, start_timeout: float = 300.0) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, factory, args), daemon=True, name="nerfvc-render"
        )
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        if not self._conn.poll(start_timeout):
            self.close()
            raise RenderWorkerError("the render process did not start in time")
        status, value = self._conn.recv()
        if status != "ready":
            self.close()
            raise RenderWorkerError(f"the render process failed: {value}")
        self.label = f"{value} (worker process)"

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        """Render in the child process; raises :class:`RenderWorkerError` if it died or failed."""
        with self._lock:
            try:
                self._conn.send((np.asarray(expression), np.asarray(pose), int(width), int(height)))
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as e:
                raise RenderWorkerError(f"the render process died ({e})") from e
        if status != "ok":
            raise RenderWorkerError(f"render failed in the worker process: {value}")
        return value

    def close(self) -> None:
        """Stop the child process."""
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)


class RendererPool:
    """``n`` :class:`ProcessRenderer` workers; ``render`` may be called from up to ``n`` threads at once and
    blocks until a worker is free."""

    def __init__(self, n: int, factory: Callable[..., Any], *args: Any, start_timeout: float = 300.0):
        self._workers: list[ProcessRenderer] = []
        try:
            for _ in range(max(1, n)):
                self._workers.append(ProcessRenderer(factory, *args, start_timeout=start_timeout))
        except Exception:
            self.close()
            raise
        self._free: queue.Queue[ProcessRenderer] = queue.Queue()
        for w in self._workers:
            self._free.put(w)
        self.label = f"{self._workers[0].label} x{len(self._workers)}"

    def __len__(self) -> int:
        return len(self._workers)

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        """Render on the next free worker."""
        worker = self._free.get()
        try:
            return worker.render(expression, pose, width, height)
        finally:
            self._free.put(worker)

    def close(self) -> None:
        """Stop every worker."""
        for w in self._workers:
            w.close()
