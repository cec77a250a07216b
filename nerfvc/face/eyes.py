"""The eyes of a person's face model: each eye's aperture for an expression, and how far the two differ.

A wink is the one expression every enrollment misses: blinks close both eyes (their apertures correlate
0.61-0.97 over the training frames of the shared clips), so the NeRF draws a wink as a half-blink of both, and
at 1-2 kbps the codec flattens the small, minor components that tell the eyes apart (``benchmarks/wink.py``).
The sender's encoder keeps both eyes' openings through its quantizer (:class:`nerfvc.codec.StreamEncoder`'s
``eyes``) and the receiver draws such a frame's eye regions by halves (:mod:`nerfvc.render.halves`); both
measure it here, on the face model's lid landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfvc.face.model import load_face_mesh_model

SIDES = ("left", "right")  # the subject's left (image right) and right eye
EYE_LIDS = {"left": (386, 374), "right": (159, 145)}  # face-mesh landmarks: each eye's upper and lower lid
EYE_CORNERS = {"left": (263, 362), "right": (33, 133)}  # ... its outer and inner corner
# The two eyes' apertures differ by more than this many mean apertures (of the person's mean shape): a wink.
# Every frame of the 8 shared clips differs by at most 0.51 (tracked or decoded at 1-4 kbps), a wink by ~0.9
# (an open eye ~1, a shut one 0.1-0.3; benchmarks/results/wink.md). Brows are not measured: the clips' frames
# differ between their two brows by up to half the brow's height above the eye, as much as one raised brow.
APERTURE_ASYMMETRY = 0.6


@dataclass
class EyeApertures:
    """The lids of a face model: their mean positions and their rows of the expression basis."""

    lids: np.ndarray  # (4,3) left upper, left lower, right upper, right lower lid, mean shape (metres)
    lid_basis: np.ndarray  # (4,3,E) how each lid moves per expression coefficient
    aperture: float  # the mean shape's eye aperture (mean of both eyes)
    threshold: float = APERTURE_ASYMMETRY

    @classmethod
    def from_shape(
        cls, mean: np.ndarray, basis: np.ndarray, threshold: float = APERTURE_ASYMMETRY
    ) -> EyeApertures:
        """From a face model's mean shape (L,3) and orthonormal expression basis (3L,E)."""
        ids = [i for s in SIDES for i in EYE_LIDS[s]]
        mean = np.asarray(mean, np.float64)
        lids = mean[ids]
        lid_basis = np.asarray(basis, np.float64).reshape(len(mean), 3, -1)[ids]
        aperture = float(np.mean(np.linalg.norm(lids[0::2] - lids[1::2], axis=-1)))
        return cls(lids, lid_basis, aperture, threshold)

    @property
    def expression_dim(self) -> int:
        return self.lid_basis.shape[2]

    def openings(self, expression: np.ndarray) -> np.ndarray:
        """Expressions (..., E) → (..., 2) the subject's left and right eye's aperture, in mean apertures."""
        e = np.asarray(expression, np.float64)
        lids = self.lids + np.einsum("lde,...e->...ld", self.lid_basis, e)  # (...,4,3)
        return np.linalg.norm(lids[..., 0::2, :] - lids[..., 1::2, :], axis=-1) / self.aperture

    def asymmetry(self, expression: np.ndarray) -> np.ndarray:
        """Expressions (..., E) → (...) the subject's left eye's aperture minus the right's, in mean
        apertures (a wink of the left eye ≈ −1)."""
        both = self.openings(expression)
        return both[..., 0] - both[..., 1]

    def winks(self, expression: np.ndarray) -> bool:
        """Whether one expression (E,) is a wink (its eyes differ by more than the threshold)."""
        return bool(abs(self.asymmetry(expression)) > self.threshold)


def load_eyes(directory: str | Path) -> EyeApertures | None:
    """The eyes of a MODEL (or DATASET) directory's face model, or None when it has no face-mesh model with a
    mean shape and basis (a synthetic one)."""
    face = load_face_mesh_model(directory)
    return None if face is None else EyeApertures.from_shape(*face)
