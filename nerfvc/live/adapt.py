"""Hold the frame rate when the receiver's CPU cannot: render below the display size and upscale.

The model is resolution-agnostic, so a receiver that falls behind can draw each frame with fewer rays and
upscale it to the display size (WebRTC's "maintain framerate" degradation, done on the render side). On
german's 100 held-out frames at a 256² display (10-minute model, Lanczos upscaling; `heldout.json`
``live_render_below_display``), rendering at 224² costs 0.06 dB and LPIPS 0.029 → 0.031, at 192² 0.14 dB and
0.034, for 0.77× and 0.56× the rays; at 160² LPIPS is 0.048, worse than the frozen frame's 0.040, so the
floor is 3/4 of the display size and below it the receiver drops frames instead (latest wins).

:class:`RenderSizeController` keeps a per-pixel cost estimate from the renders it is told about and picks
the largest size (a multiple of ``step``, between ``min_size`` and the display size) whose predicted render
time keeps ``workers`` renderers at the call's frame rate. It steps down at once and up one step at a time,
only when the next size up fits with ``headroom`` to spare.
"""

from __future__ import annotations

import math

import numpy as np

COST_EMA = 0.2  # weight of the newest render in the per-pixel cost estimate


def upscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 → (size, size, 3) uint8 by Lanczos (unchanged when already that size)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LANCZOS4)


class RenderSizeController:
    """Chooses the render size for a display size so that ``workers`` renderers keep up with ``fps``."""

    def __init__(
        self,
        display_size: int,
        fps: float,
        workers: int = 1,
        min_fraction: float = 0.75,
        step: int = 16,
        headroom: float = 0.85,
    ) -> None:
        if not (fps > 0 and workers >= 1 and 0 < min_fraction <= 1 and step >= 1 and 0 < headroom <= 1):
            raise ValueError("fps > 0, workers ≥ 1, 0 < min_fraction ≤ 1, step ≥ 1 and 0 < headroom ≤ 1")
        self.step = int(step)
        self.fps = float(fps)
        self.workers = int(workers)
        self.min_fraction = float(min_fraction)
        self.headroom = float(headroom)
        self.cost: float | None = None  # seconds per rendered pixel (EMA)
        self.display_size = 0
        self.size = 0
        self.set_display_size(display_size)

    @property
    def min_size(self) -> int:
        """The smallest render size for this display size."""
        floor = self.step * math.ceil(self.min_fraction * self.display_size / self.step)
        return min(self.display_size, max(self.step, floor))

    def set_display_size(self, display_size: int) -> None:
        """A new display size (the viewer changed it): start from it again."""
        self.display_size = int(display_size)
        self.size = self.display_size

    def set_fps(self, fps: float) -> None:
        """The call's frame rate (frames to render per second) changed."""
        if fps > 0:
            self.fps = float(fps)

    def predicted_s(self, size: int) -> float:
        """Predicted render time of one size² frame (0 before any render was reported)."""
        return 0.0 if self.cost is None else self.cost * size * size

    def observe(self, size: int, seconds: float) -> int:
        """Report one render of size² that took ``seconds``; returns the size to render next."""
        if size <= 0 or not math.isfinite(seconds) or seconds < 0:
            return self.size
        c = seconds / (size * size)
        self.cost = c if self.cost is None else (1 - COST_EMA) * self.cost + COST_EMA * c
        budget = self.workers / self.fps  # seconds one renderer may take per frame
        if self.predicted_s(self.size) > budget:  # behind: go straight to the largest size that fits
            fits = math.sqrt(budget / self.cost) if self.cost > 0 else self.display_size
            self.size = max(self.min_size, min(self.size - self.step, self.step * int(fits // self.step)))
        else:
            up = min(self.display_size, self.size + self.step)
            if up > self.size and self.predicted_s(up) <= self.headroom * budget:
                self.size = up
        return self.size
