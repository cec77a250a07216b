"""Sender-side tracker: frame → :class:`~nerfvc.features.FaceFeatures` with the person's morphable model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nerfvc.camera import Camera
from nerfvc.errors import InputError
from nerfvc.face.mesh import NUM_LANDMARKS, FaceMesh
from nerfvc.face.model import FaceModel
from nerfvc.face.smoothing import FeatureSmoother, SmoothingParams
from nerfvc.features import FaceFeatures
from nerfvc.fsutil import read_json


class FaceTracker:
    """Track one face per frame and project it onto ``face_model``.

    ``camera`` are the intrinsics of the dataset the model was built from; frames of another size use
    ``camera.scaled(w, h)`` (same framing assumed). ``smoothing`` switches the one-euro filter on pose and
    expression. ``track`` returns ``ok=False`` (and the last good values) when no single face is found.
    """

    def __init__(
        self,
        face_model: FaceModel,
        camera: Camera,
        smoothing: bool = True,
        params: SmoothingParams | None = None,
        max_num_faces: int = 1,
    ):
        self.model = face_model
        self.camera = camera
        self.smoothing = smoothing
        self._mesh = FaceMesh(max_num_faces=max_num_faces)
        self._smoother = FeatureSmoother(params)
        self._frame = 0
        e = np.zeros(face_model.expr_dims, np.float32)
        pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, camera.fx * 0.15 / camera.width], np.float32)
        self._last = FaceFeatures(e, pose, np.zeros((NUM_LANDMARKS, 3), np.float32), False)

    @classmethod
    def from_dir(cls, path: str | Path, **kwargs) -> FaceTracker:
        """Tracker for a DATASET (``manifest.json``) or MODEL (``camera.json``) directory."""
        d = Path(path)
        if not d.is_dir():
            raise InputError(f"{d}: directory not found")
        if (d / "camera.json").exists():
            cam = Camera.from_dict(read_json(d / "camera.json"))
        elif (d / "manifest.json").exists():
            cam = Camera.from_dict(read_json(d / "manifest.json")["camera"])
        else:
            raise InputError(f"{d}: neither camera.json nor manifest.json (not a dataset or model directory)")
        return cls(FaceModel.load(d), cam, **kwargs)

    def _camera_for(self, frame: np.ndarray) -> Camera:
        h, w = frame.shape[:2]
        if (w, h) == (self.camera.width, self.camera.height):
            return self.camera
        return self.camera.scaled(w, h)

    def features(self, landmarks: np.ndarray, frame_size: tuple[int, int], t: float) -> FaceFeatures:
        """Features from already-tracked pixel landmarks ``(478, 3)`` on a frame of ``(w, h)``."""
        w, h = frame_size
        cam = self.camera if (w, h) == (self.camera.width, self.camera.height) else self.camera.scaled(w, h)
        expr, pose = self.model.fit(landmarks, cam)
        if self.smoothing:
            expr, pose = self._smoother(expr, pose, t)
        self._last = FaceFeatures(expr, pose, np.asarray(landmarks, np.float32), True)
        return self._last

    def track(self, frame: np.ndarray, timestamp: float | None = None) -> FaceFeatures:
        """Features of the uint8 RGB ``frame`` (H, W, 3); ``timestamp`` (s) defaults to frame index / 30."""
        t = self._frame / 30.0 if timestamp is None else float(timestamp)
        self._frame += 1
        faces = self._mesh.detect(frame)
        if len(faces) != 1:
            last = self._last
            return FaceFeatures(last.expression, last.pose, last.landmarks, False)
        h, w = frame.shape[:2]
        return self.features(faces[0], (w, h), t)

    def reset(self) -> None:
        """Forget the smoothing state (e.g. after a cut)."""
        self._smoother.reset()

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
