"""Thin wrapper around mediapipe's face mesh (478 landmarks incl. irises) and selfie segmentation."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_LANDMARKS = 478

# Face oval, clockwise in the image starting at the top of the forehead (mediapipe FACEMESH_FACE_OVAL order).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]  # fmt: skip
# The lower face oval from the subject's left jaw angle (288) over the chin (152) to the right jaw angle
# (58): the head/torso split follows it and continues horizontally from its ends (ear lobes stay "head").
JAW_LINE = FACE_OVAL[FACE_OVAL.index(288) : FACE_OVAL.index(58) + 1]
# Landmarks that barely move with expressions (forehead, nose bridge, eye corners, cheek/temple contour).
STABLE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356, 93, 323,
          70, 300, 105, 334, 98, 327, 109, 338, 67, 297]  # fmt: skip
EYE_OUTER = (33, 263)  # the subject's right / left outer eye corners (image left / right when frontal)
FOREHEAD, CHIN = 10, 152


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines (TFLite/absl start-up chatter) written to fd 2 while mediapipe starts.

    Set ``NERFVC_MEDIAPIPE_LOGS=1`` to see them.
    """
    if os.environ.get("NERFVC_MEDIAPIPE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceMesh:
    """mediapipe face mesh in tracking mode with iris refinement.

    ``detect(frame)`` returns a list of ``(478, 3)`` float32 arrays, one per face, in pixels of ``frame``:
    ``(x, y, z)`` with ``z`` mediapipe's relative depth scaled like ``x`` (negative = towards the camera).
    """

    def __init__(self, max_num_faces: int = 2, static: bool = False, min_confidence: float = 0.5):
        with quiet_native_stderr():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_num_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
            for s in (64, 256):  # the first runs log (from worker threads): do them now, silently
                self._mesh.process(np.zeros((s, s, 3), np.uint8))

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face found in the uint8 RGB ``frame`` ``(H, W, 3)``."""
        h, w = frame.shape[:2]
        with quiet_native_stderr():  # sub-models start lazily (on the first face) and log then
            res = self._mesh.process(np.ascontiguousarray(frame))
        faces = []
        for lm in res.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float32)  # (478, 3) normalised
            a *= np.array([w, h, w], dtype=np.float32)
            faces.append(a)
        return faces

    def close(self) -> None:
        """Release the mediapipe graph."""
        self._mesh.close()


class PersonSegmenter:
    """mediapipe selfie segmentation: ``person(frame)`` → ``(H, W)`` float32 probability of 'person'."""

    def __init__(self, model_selection: int = 0):
        with quiet_native_stderr():
            import mediapipe as mp

            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
            for s in (64, 256):
                self._seg.process(np.zeros((s, s, 3), np.uint8))

    def person(self, frame: np.ndarray) -> np.ndarray:
        """Person probability ``(H, W)`` float32 in [0, 1] for the uint8 RGB ``frame`` ``(H, W, 3)``."""
        with quiet_native_stderr():
            mask = self._seg.process(np.ascontiguousarray(frame)).segmentation_mask
        return np.asarray(mask, dtype=np.float32)

    def close(self) -> None:
        """Release the mediapipe graph."""
        self._seg.close()
