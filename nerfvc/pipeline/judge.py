"""The sender's frame step chosen by rendering (analysis by synthesis in the rate control).

At a low rate the codec either codes every frame with a coarse quantizer or every m-th frame with a finer
one and lets the receiver interpolate the rest (docs/bitstream.md "Frame step"). Which renders better depends
on the clip's motion, which the step size alone does not tell. The sender holds the receiver's model and the
camera frames, so — as a classic encoder tries its modes by decoding them — it codes the clip at each frame
step the rate allows, decodes it as the receiver will, renders it small and keeps the frame step whose render
is closest to its camera frames (:func:`nerfvc.codec.encoder.judged_frame_step`, which keeps the pose bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.guard.picture import shrink
from nerfvc.metrics import psnr

if TYPE_CHECKING:
    from nerfvc.pipeline.receiver import ReceiverPipeline

# Longer side (px) of the judge's renders: the quality guard's check size. Rendered at 64, 96 and 128 px,
# the 8 shared clips' held-out ends at 1 and 2 kbps pick the frame step that renders best at 256² on 14, 14
# and 15 of 16 points, for the same mean gain (docs/bitstream.md "Frame step chosen by rendering").
JUDGE_SIZE = 64
JUDGE_MAX_FRAMES = 250  # frames rendered per candidate, evenly spaced over the clip (a long clip's cost)


class RenderJudge:
    """Scores a frame step: ``judge(m, k)`` codes the clip with ``encode(m, k)`` (frame step m, step index
    k), decodes it with ``receiver``, renders up to ``max_frames`` of its frames at ``size`` px and returns
    their mean PSNR (dB) against ``camera`` (N,H,W,3) uint8, the clip's frames as the model camera crops them.
    ``scores`` keeps each frame step's score (for reports)."""

    def __init__(
        self,
        receiver: ReceiverPipeline,
        camera: np.ndarray,
        encode: Callable[[int, int], bytes],
        size: int = JUDGE_SIZE,
        max_frames: int = JUDGE_MAX_FRAMES,
    ) -> None:
        n = len(camera)
        self.index = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))  # (F,)
        self.camera = np.stack([shrink(camera[i], size) for i in self.index])  # (F,h,w,3)
        self.receiver = receiver
        self.encode = encode
        self.scores: dict[int, float] = {}

    def __call__(self, frame_step: int, step_index: int) -> float:
        decoded = self.receiver.decode_stream(self.encode(frame_step, step_index))
        if len(decoded.pose) <= self.index[-1]:
            raise ValueError(f"decoded {len(decoded.pose)} frames, the judge scores up to {self.index[-1]}")
        h, w = self.camera.shape[1:3]
        score = float(
            np.mean(
                [
                    psnr(self.receiver.render(decoded.expression[i], decoded.pose[i], w, h), cam)
                    for i, cam in zip(self.index, self.camera)
                ]
            )
        )
        self.scores[frame_step] = score
        return score
