"""Run a loopback call between an in-process receiver and sender (tests and benchmarks)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from nerfvc.live.classic import ClassicEncoder
from nerfvc.live.interfaces import DebugDiscRenderer, FrameRenderer
from nerfvc.live.receiver import Receiver
from nerfvc.live.sender import Sender, SenderConfig, SenderReport
from tests.live.standins import ArraySource, StandInDecoder, StandInEncoder


async def run_call(
    clip: tuple,
    receiver: Receiver | None = None,
    renderer: FrameRenderer | None = None,
    size: int = 128,
    classic: str | None = None,
    settle: float = 0.3,
    **config: Any,
) -> tuple[SenderReport, Receiver, StandInEncoder]:
    """One call of the whole clip; returns (sender report, receiver (stopped unless given), encoder)."""
    frames, code, pose, fps = clip
    own = receiver is None
    rx = receiver or Receiver(StandInDecoder, renderer or DebugDiscRenderer(), size=size, record=True)
    port = rx.port or await rx.start()
    enc = StandInEncoder(code.shape[1])
    cls = ClassicEncoder(classic, 100, fps, 256) if classic else None
    cfg = SenderConfig(f"http://127.0.0.1:{port}", rx.token, record=True, **config)
    images = frames if classic else None
    try:
        report = await Sender(ArraySource(code, pose, fps, images), enc, cfg, cls).run()
        await asyncio.sleep(settle)
    finally:
        if own:
            await rx.stop()
    return report, rx, enc


class StampingRenderer(DebugDiscRenderer):
    """A debug renderer that appends "pid start end" (wall-clock seconds) of every render to ``log``, so a
    test can check which processes rendered and whether their renders overlapped."""

    def __init__(self, log: str, delay: float) -> None:
        super().__init__(delay)
        self.log = log

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        start = time.time()
        out = super().render(expression, pose, width, height)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {start} {time.time()}\n")
        return out
