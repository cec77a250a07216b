"""The quality guard at a live sender (docs/guard.md): per coded frame, what the receiver will decode is
rendered at the guard's check size and compared with the camera frame; the fallback packets that
:class:`~nerfvc.guard.fallback.SenderGuard` decides are framed for the media channel, to go before the frame's
feature packet. Files run the same guard through :mod:`nerfvc.guard.sequence`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nerfvc.guard.fallback import GuardConfig, SenderGuard
from nerfvc.live.interfaces import FrameRenderer

if TYPE_CHECKING:
    from nerfvc.pipeline.sender import FeatureEncoder


class LiveGuard:
    """``packets(n, crop)`` after the encoder coded frame ``n`` → the fallback packets to send before it.

    ``encoder`` is the call's :class:`~nerfvc.pipeline.FeatureEncoder` (``last_reconstruction``: what the
    receiver decodes; ``fallback``: frames a packet; ``frame_step``), ``renderer`` the person's NeRF (the
    sender holds the receiver's model), ``fps`` the camera rate. Fallback packets are indexed by camera
    frame (coded frame n is camera frame n · frame step), as in files.
    """

    def __init__(
        self, encoder: FeatureEncoder, renderer: FrameRenderer, fps: float, config: GuardConfig | None = None
    ) -> None:
        self.encoder = encoder
        self.renderer = renderer
        self.config = config or GuardConfig()
        self.frame_step = encoder.frame_step
        self.guard = SenderGuard(self.config, fps / self.frame_step)  # one step per coded frame
        self.pictures = 0

    def packets(self, n: int, crop: np.ndarray) -> list[bytes]:
        """Coded frame ``n`` (just encoded) and its camera frame ``crop`` (H, W, 3) uint8, cropped to the
        model camera → framed fallback packets (usually none)."""
        rec = self.encoder.last_reconstruction
        if rec is None:
            return []
        s = self.config.check_size
        tiny = self.renderer.render(rec[0], rec[1], s, s)
        new, _ = self.guard.step(n * self.frame_step, crop, tiny)
        self.pictures += sum(bool(p.picture) for p in new)
        return [self.encoder.fallback(p.index, p.alpha, p.picture) for p in new]
