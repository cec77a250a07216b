"""Sliding-window rate and latency meters for live stats."""

from __future__ import annotations

import time
from collections import deque


class RateMeter:
    """Counts events and bytes over a sliding window of ``window`` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = float(window)
        self._events: deque[tuple[float, int]] = deque()
        self.total_bytes = 0
        self.total_count = 0
        self._start: float | None = None

    def add(self, nbytes: int = 0, now: float | None = None) -> None:
        """Record one event of ``nbytes``."""
        now = time.monotonic() if now is None else now
        if self._start is None:
            self._start = now
        self._events.append((now, nbytes))
        self.total_bytes += nbytes
        self.total_count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            self._events.popleft()

    def rate(self, now: float | None = None) -> tuple[float, float]:
        """(events per second, bits per second) over the window."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if not self._events or self._start is None:
            return 0.0, 0.0
        span = max(min(self.window, now - self._start), 1e-3)
        n = len(self._events)
        nbytes = sum(b for _, b in self._events)
        return n / span, 8 * nbytes / span


class LatencyMeter:
    """Keeps recent latency samples (s) and all-time samples for summaries."""

    def __init__(self, recent: int = 50) -> None:
        self._recent: deque[float] = deque(maxlen=recent)
        self.all: list[float] = []

    def add(self, seconds: float) -> None:
        """Record one latency sample."""
        self._recent.append(seconds)
        if len(self.all) < 1_000_000:
            self.all.append(seconds)

    def median_ms(self) -> float | None:
        """Median of the recent samples in ms (None before the first sample)."""
        if not self._recent:
            return None
        s = sorted(self._recent)
        return 1000 * s[len(s) // 2]


def percentile_ms(samples: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``samples`` (s) in ms, or None if empty."""
    if not samples:
        return None
    s = sorted(samples)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(1000 * s[k], 2)
