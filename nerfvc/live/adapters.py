"""The real pieces behind the live interfaces, loaded from a MODEL directory.

Expected APIs (built on other branches; imported lazily so ``nerfvc.live`` works without them):

- codec: ``nerfvc.codec.tables.load_model_tables(MODEL)`` (tables + fingerprint, verified),
  ``StreamEncoder(tables, fingerprint, fps=, kbps=, keyframe_interval=)`` with ``header()``,
  ``encode(code, pose)``, ``request_keyframe()``, optional ``adapt(bits)`` and ``last_reconstruction``;
  ``StreamDecoder(tables, fingerprint)`` with ``read_header(bytes)`` and ``decode(packet) -> DecodedFrame``.
  Packet indices must count ``encode`` calls from 0 (the sender's capture-time marks use that count).
- tracker: ``nerfvc.face.tracker.FaceTracker.from_dir(MODEL)``, ``.track(rgb, timestamp) -> FaceFeatures``;
  ``nerfvc.io.video.read_frames(path) -> iter of (rgb, t)``.
- renderer: ``nerfvc.render.renderer.Renderer.from_model_dir(MODEL)``, ``.render(expr, pose, w, h) -> uint8``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nerfvc.errors import InputError
from nerfvc.features import model_input
from nerfvc.live.interfaces import SourceFrame
from nerfvc.modeldir import model_torso_dims

log = logging.getLogger(__name__)


def _missing(what: str, e: ImportError) -> InputError:
    return InputError(f"{what} is not available in this build ({e}); it lands with its own branch")


def make_encoder(model: str | Path, fps: float, kbps: float | None = None) -> Any:
    """A ``StreamEncoder`` for the model (live rate control toward ``kbps`` when given)."""
    from nerfvc.codec import StreamEncoder
    from nerfvc.codec.tables import load_model_tables

    tables, fp = load_model_tables(model)
    return StreamEncoder(tables, fp, fps=fps, kbps=kbps)


def decoder_factory(model: str | Path) -> Any:
    """A function making a fresh ``StreamDecoder`` for the model (one per call)."""
    from nerfvc.codec import StreamDecoder
    from nerfvc.codec.tables import load_model_tables

    tables, fp = load_model_tables(model)
    return lambda: StreamDecoder(tables, fp)


def make_renderer(model: str | Path, threads: int | None = None) -> Any:
    """The person's NeRF renderer (``threads``: torch threads for it; default as configured)."""
    try:
        from nerfvc.render.renderer import Renderer
    except ImportError as e:
        raise _missing("the NeRF renderer (nerfvc.render)", e) from e
    r = Renderer.from_model_dir(model)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return r


class TrackedSource:
    """Frames from a video file (paced at its frame rate) or a camera, tracked with the person's face model.

    Falls behind gracefully: a file frame more than two frame intervals late is skipped (not tracked).
    ``keep_images`` keeps the RGB frames for the classic-codec fallback.
    """

    def __init__(
        self,
        model: str | Path,
        video: str | None = None,
        camera: int | None = None,
        keep_images: bool = False,
    ) -> None:
        if (video is None) == (camera is None):
            raise InputError("give either --video FILE or --camera N")
        try:
            from nerfvc.face.tracker import FaceTracker
        except ImportError as e:
            raise _missing("the face tracker (nerfvc.face.tracker)", e) from e
        self.tracker = FaceTracker.from_dir(model)
        self.torso_dims = model_torso_dims(model)
        self.video, self.camera, self.keep_images = video, camera, keep_images
        self.skipped = 0
        if video is not None:
            from nerfvc.io.video import probe

            self.fps = float(probe(video).fps) or 25.0
        else:
            import cv2

            self._cap = cv2.VideoCapture(int(camera))  # type: ignore[arg-type]
            if not self._cap.isOpened():
                raise InputError(f"camera {camera} cannot be opened")
            self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 30.0)

    def _raw(self) -> Iterator[tuple[np.ndarray, float, float]]:
        """(rgb, media time, capture wall time), paced in real time."""
        if self.video is not None:
            from nerfvc.io.video import read_frames

            t0 = None
            for rgb, t in read_frames(self.video):
                if t0 is None:
                    t0 = time.time() - t
                due = t0 + t
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -2 / self.fps:
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
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now - start, now

    def __iter__(self) -> Iterator[SourceFrame]:
        for rgb, t, captured in self._raw():
            f = self.tracker.track(rgb, t)
            image = rgb if self.keep_images else None
            code = model_input(f.expression, f.torso, self.torso_dims)  # what the receiver's NeRF takes
            yield SourceFrame(t, code, np.asarray(f.pose, np.float32), image, captured)
