"""Sender-side tracker: frame → :class:`~nerfvc.features.FaceFeatures` with the person's morphable model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nerfvc.camera import Camera
from nerfvc.datasetdir import MANIFEST as DATASET_MANIFEST
from nerfvc.errors import InputError
from nerfvc.face.mesh import NUM_LANDMARKS, FaceMesh
from nerfvc.face.model import FaceModel
from nerfvc.face.smoothing import FeatureSmoother, SmoothingParams
from nerfvc.face.torso import TorsoTracker
from nerfvc.features import FaceFeatures
from nerfvc.fsutil import read_json


class FaceTracker:
    """Track one face per frame and project it onto ``face_model``.

    ``camera`` are the intrinsics of the dataset the model was built from; frames of another size use
    ``camera.scaled(w, h)`` (same framing assumed). A frame whose aspect ratio differs from the camera's
    (e.g. the raw 512×480 clip of a dataset prepared with a square crop) is first cropped with ``crop``
    ``(x0, y0, w, h)`` — the dataset's crop, read by :meth:`from_dir` — if it fits, else centre-cropped to
    the camera's aspect; the returned landmarks are then in pixels of that crop. ``smoothing`` switches the
    one-euro filter on pose and expression (``params``, default the face model's); by default (None) it
    follows the face model: on exactly when the training features were smoothed, with the same parameters
    (for models trained on raw fits, raw fits at the sender scored +0.4 dB at 256², docs/face.md).
    ``track`` returns ``ok=False`` (and the last good values) when no single face is found. ``torso`` (read
    by :meth:`from_dir` when the directory has one) adds the torso shift to every frame.
    """

    def __init__(
        self,
        face_model: FaceModel,
        camera: Camera,
        smoothing: bool | None = None,
        params: SmoothingParams | None = None,
        max_num_faces: int = 1,
        crop: tuple[int, int, int, int] | None = None,
        torso: TorsoTracker | None = None,
    ):
        self.model = face_model
        self.torso = torso
        self.camera = camera
        self.crop = tuple(int(v) for v in crop) if crop is not None else None
        self.smoothing = face_model.smoothing is not None if smoothing is None else smoothing
        self._mesh = FaceMesh(max_num_faces=max_num_faces)
        self._smoother = FeatureSmoother(params or face_model.smoothing)
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
            meta = read_json(d / "camera.json")
            cam = Camera.from_dict(meta)
        elif (d / DATASET_MANIFEST).exists():
            meta = read_json(d / DATASET_MANIFEST)
            cam = Camera.from_dict(meta["camera"])
        else:
            raise InputError(f"{d}: neither camera.json nor manifest.json (not a dataset or model directory)")
        if meta.get("crop") and "crop" not in kwargs:  # the dataset's crop of the source video
            kwargs["crop"] = tuple(meta["crop"])
        kwargs.setdefault("torso", TorsoTracker.from_dir(d))
        return cls(FaceModel.load(d), cam, **kwargs)

    def frame_for_camera(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` cropped to the camera's aspect ratio (the dataset crop if it fits, else centred)."""
        h, w = frame.shape[:2]
        aspect = self.camera.width / self.camera.height
        if abs(w / h - aspect) < 1e-3:
            return frame
        if self.crop is not None:
            x0, y0, cw, ch = self.crop
            if x0 + cw <= w and y0 + ch <= h and abs(cw / ch - aspect) < 1e-2:
                return frame[y0 : y0 + ch, x0 : x0 + cw]
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return frame[y0 : y0 + ch, x0 : x0 + cw]

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
        frame = self.frame_for_camera(frame)
        torso = self.torso.shift(frame) if self.torso is not None else None
        faces = self._mesh.detect(frame)
        if len(faces) != 1:
            last = self._last
            return FaceFeatures(last.expression, last.pose, last.landmarks, False, torso)
        h, w = frame.shape[:2]
        f = self.features(faces[0], (w, h), t)
        return FaceFeatures(f.expression, f.pose, f.landmarks, True, torso)

    def reset(self) -> None:
        """Forget the smoothing state (e.g. after a cut)."""
        self._smoother.reset()

    def close(self) -> None:
        """Release the face mesh."""
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
