"""Winks drawn by halves.

The NeRF learns how the expression moves the face from the enrollment clip, where the two eyes and brows move
together (a blink closes both: their apertures correlate 0.61-0.97 over the training frames of the shared
clips). A wink's expression code is as easy to send (the person's 79-d face model holds it to a fraction of a
millimetre), but the components that carry the difference between the eyes lie 5-16 training stds out, and
the model draws it as a half-blink of both eyes (``benchmarks/wink.py``). Each half of a wink is ordinary,
though: one eye shut as in a blink, the other open. So when a frame winks (:mod:`nerfvc.face.eyes`: its eye
apertures differ by more than ``APERTURE_ASYMMETRY``), the renderer draws each eye region (the eye with its
brow) from a symmetric code, the frame's face with the other region replaced by this one's mirror image, and
feathers the two regions into the frame (:meth:`nerfvc.render.renderer.Renderer.render_float`, before the
reference texture). The bitstream does not change: the receiver derives both codes from the decoded
expression through the person's face model (``face_model.safetensors`` in the MODEL directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nerfvc.camera import Camera
from nerfvc.face.eyes import APERTURE_ASYMMETRY, EYE_CORNERS, EYE_LIDS, SIDES, EyeApertures
from nerfvc.face.model import load_face_mesh_model

# an eye region: the landmarks within REGION_INNER_M of the eye's centre (its lids and corners), fading to
# nothing at REGION_OUTER_M; 25-35 mm around the eye takes in its brow and stops short of the nose's midline
REGION_INNER_M = 0.025
REGION_OUTER_M = 0.035
FEATHER = 0.25  # each region's pixel box is widened by this share of its width and faded in over it


@dataclass
class FaceHalves:
    """The mirror geometry of a person's face model, for drawing asymmetric eye regions by halves."""

    basis: np.ndarray  # (3L, E) the face model's orthonormal expression basis
    mean: np.ndarray  # (L, 3) its mean shape, canonical head space (x to the subject's left)
    mirror: np.ndarray  # (L,) the landmark at each landmark's mirror position
    region: dict[str, np.ndarray]  # side → (L,) weight of each landmark in that eye region, 0..1
    eyes: EyeApertures  # when a frame winks

    @classmethod
    def from_shape(
        cls, mean: np.ndarray, basis: np.ndarray, threshold: float = APERTURE_ASYMMETRY
    ) -> FaceHalves:
        """Mirror map and eye regions of a face model's mean shape (L,3) (reflected across its median x) and
        its expression basis (3L,E)."""
        mean = np.asarray(mean, np.float64)
        reflected = mean * np.array([-1.0, 1.0, 1.0]) + np.array([2 * np.median(mean[:, 0]), 0.0, 0.0])
        mirror = np.argmin(((reflected[:, None] - mean[None]) ** 2).sum(-1), 1)  # (L,)
        span = REGION_OUTER_M - REGION_INNER_M
        centre = {s: mean[list(EYE_LIDS[s] + EYE_CORNERS[s])].mean(0) for s in SIDES}  # (3,) each
        distance = {s: np.linalg.norm(mean - centre[s], axis=1) for s in SIDES}  # (L,) each
        region = {s: np.clip((REGION_OUTER_M - distance[s]) / span, 0, 1) for s in SIDES}
        eyes = EyeApertures.from_shape(mean, basis, threshold)
        return cls(np.asarray(basis, np.float64), mean, mirror, region, eyes)

    def _displacement(self, expression: np.ndarray) -> np.ndarray:
        """Expressions (N,E) → landmark displacements from the mean shape (N,L,3)."""
        e = np.asarray(expression, np.float64).reshape(-1, self.basis.shape[1])
        return (e @ self.basis.T).reshape(len(e), -1, 3)

    def _reflected(self, d: np.ndarray) -> np.ndarray:
        """Displacements (N,L,3) → each landmark given its mirror landmark's displacement, reflected."""
        return d[:, self.mirror] * np.array([-1.0, 1.0, 1.0])

    def symmetric_codes(self, expression: np.ndarray) -> dict[str, np.ndarray] | None:
        """Expression (E,) → per side the code (E,) of the face with the other eye region replaced by this
        side's mirror image, or None when the frame is not asymmetric enough to need them."""
        if not self.eyes.winks(np.asarray(expression).reshape(-1)):
            return None
        d = self._displacement(expression)[0]  # (L,3)
        r = self._reflected(d[None])[0]
        codes = {}
        for side, other in (("left", "right"), ("right", "left")):
            sym = d + self.region[other][:, None] * (r - d)  # (L,3)
            codes[side] = sym.reshape(-1) @ self.basis  # (E,)
        return codes

    def region_boxes(self, expression: np.ndarray, pose: np.ndarray, camera: Camera) -> dict[str, Region]:
        """Per side the pixel box of its eye region posed by ``pose`` (12,) in ``camera``'s frame, widened by
        :data:`FEATHER` of its size on every side (sides whose box misses the frame are left out)."""
        d = self._displacement(expression)[0]
        pose = np.asarray(pose, np.float64).reshape(12)
        points = (self.mean + d) @ pose[:9].reshape(3, 3).T + pose[9:12]  # (L,3) camera space
        if np.any(points[:, 2] <= 1e-6):
            return {}
        px = camera.project(points)  # (L,2)
        boxes = {}
        for side in SIDES:
            q = px[self.region[side] >= 0.5]  # (n,2) the region's landmarks
            if not len(q):
                continue
            (x0, y0), (x1, y1) = q.min(0), q.max(0)
            pad = FEATHER * max(x1 - x0, y1 - y0, 1.0)
            box = Region(y0 - pad, y1 + pad, x0 - pad, x1 + pad, pad)
            if box.pixels(camera.height, camera.width) is not None:
                boxes[side] = box
        return boxes


def load_face_halves(directory: str | Path) -> FaceHalves | None:
    """The mirror geometry of a MODEL (or DATASET) directory's face model, or None when it has no face-mesh
    model with a mean shape and basis (a synthetic one)."""
    face = load_face_mesh_model(directory)
    return None if face is None else FaceHalves.from_shape(*face)


class Region(NamedTuple):
    """A feathered pixel box: edges (pixels, unclipped) and the width over which its weight fades in."""

    y0: float
    y1: float
    x0: float
    x1: float
    fade: float

    def pixels(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The whole pixels (y0, y1, x0, x1) it covers in a ``height`` × ``width`` frame, or None."""
        y0, x0 = max(int(np.floor(self.y0)), 0), max(int(np.floor(self.x0)), 0)
        y1, x1 = min(int(np.ceil(self.y1)), height), min(int(np.ceil(self.x1)), width)
        return (y0, y1, x0, x1) if y1 - y0 >= 2 and x1 - x0 >= 2 else None

    def weights(self, height: int, width: int) -> np.ndarray:
        """(h,w) weights over :meth:`pixels`: 1 inside, 0 → 1 over ``fade`` px from each edge."""
        box = self.pixels(height, width) or (0, 0, 0, 0)
        ys = np.arange(box[0], box[1]) + 0.5
        xs = np.arange(box[2], box[3]) + 0.5
        wy = np.clip(np.minimum(ys - self.y0, self.y1 - ys) / self.fade, 0, 1)
        wx = np.clip(np.minimum(xs - self.x0, self.x1 - xs) / self.fade, 0, 1)
        return np.minimum(wy[:, None], wx[None, :])
