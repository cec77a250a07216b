"""The real pieces behind the live interfaces, from a MODEL directory's pipelines (:mod:`nerfvc.pipeline`).

- source: :class:`TrackedSource` — a video file (paced at its frame rate) or a camera, tracked by the
  :class:`~nerfvc.pipeline.SenderPipeline`'s face tracker into the model's features;
- encoder / decoder: ``SenderPipeline.stream_encoder(fps, kbps=)`` and ``ReceiverPipeline.packet_decoder``
  (the embedding's code, when the model has one, is applied and expanded there);
- renderer: :func:`make_renderer`, the ``ReceiverPipeline``'s NeRF renderer, built in a render worker
  process (``nerfvc.live.workers``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.errors import InputError
from nerfvc.features import model_input
from nerfvc.guard.picture import shrink
from nerfvc.live.interfaces import SourceFrame
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline

if TYPE_CHECKING:
    from nerfvc.render.renderer import Renderer


def make_renderer(
    model: str | Path, threads: int | None = None, references: bool = True, size: int | None = None
) -> Renderer:
    """The person's NeRF renderer (``threads``: torch threads for it; default as configured; ``references``:
    with the model's reference texture), warmed up by one small frame and with its references prepared for
    ``size`` × ``size`` (the call's frames), so that building a kernel or the first call's set-up happens
    before a call, not in its first frames. Top-level, so that a render worker process can build it
    (``ProcessRenderer(make_renderer, MODEL)``)."""
    r = ReceiverPipeline.from_model_dir(model, references=references).renderer()
    if threads:
        import torch

        torch.set_num_threads(threads)
    m = r.model
    r.render(
        model_input(m.expr_mean.cpu().numpy(), None, m.cfg.torso_dims), m.pose_mean.cpu().numpy(), 32, 32
    )
    if size:
        r.prepare_references(size, size)
    return r


class CameraPacer:
    """Media times played out in real time, like a camera: :meth:`due` waits until media time ``t`` is due
    and returns its wall-clock capture time, or None when the frame is more than two frame intervals late
    (the caller drops it). The first frame sets the clock."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.t0: float | None = None  # wall-clock time of media time 0

    def due(self, t: float) -> float | None:
        """Wait for media time ``t``; its capture time, or None when too late to show."""
        if self.t0 is None:
            self.t0 = time.time() - t
        due = self.t0 + t
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        elif wait < -2 / self.fps:
            return None
        return due


class TrackedSource:
    """Frames from a video file (paced at its frame rate) or a camera, tracked with the person's face model
    into the model's features (``SenderPipeline.tracker``: crop to the camera's aspect, torso shift).

    Falls behind gracefully: a file frame more than two frame intervals late is skipped (not tracked).
    ``frame_step`` m: only every m-th camera frame is tracked and sent (set it to the encoder's; the others
    are not tracked at all). ``camera_frames`` counts every frame read, the media the call covers.
    ``keep_images`` keeps the RGB frames for the classic-codec fallback; ``crop_size`` keeps each frame
    cropped to the model camera and shrunk to that longer side (``SourceFrame.crop``, for the quality
    guard). A frame without a single face repeats the last tracked frame's features.
    """

    def __init__(
        self,
        sender: SenderPipeline,
        video: str | None = None,
        camera: int | None = None,
        keep_images: bool = False,
        crop_size: int | None = None,
    ) -> None:
        if (video is None) == (camera is None):
            raise InputError("give either --video FILE or --camera N")
        self.video, self.camera, self.keep_images = video, camera, keep_images
        self.crop_size = crop_size
        self.skipped = 0
        self.camera_frames = 0
        self.frame_step = 1
        if video is not None:
            from nerfvc.io.video import probe

            self.fps = float(probe(video).fps) or 25.0
        else:
            import cv2

            self._cap = cv2.VideoCapture(int(camera))  # type: ignore[arg-type]
            if not self._cap.isOpened():
                raise InputError(f"camera {camera} cannot be opened")
            self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 30.0)
        self.tracker = sender.tracker()

    def _raw(self) -> Iterator[tuple[np.ndarray, float, float]]:
        """(rgb, media time, capture wall time), paced in real time."""
        if self.video is not None:
            from nerfvc.io.video import read_frames

            pacer = CameraPacer(self.fps)
            for rgb, t in read_frames(self.video):
                self.camera_frames += 1
                if (self.camera_frames - 1) % self.frame_step:
                    continue
                due = pacer.due(t)
                if due is None:
                    self.skipped += 1
                    continue
                yield rgb, t, due
        else:
            import cv2

            start = time.time()
            while True:
                ok, bgr = self._cap.read()
                now = time.time()
                if not ok:
                    return
                self.camera_frames += 1
                if (self.camera_frames - 1) % self.frame_step:
                    continue
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now - start, now

    def __iter__(self) -> Iterator[SourceFrame]:
        for rgb, t, captured in self._raw():
            f = self.tracker.track(rgb, t)
            image = rgb if self.keep_images else None
            crop = shrink(self.tracker.crop(rgb), self.crop_size) if self.crop_size else None
            yield SourceFrame(t, f.features, f.pose, image, captured, crop)
