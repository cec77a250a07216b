"""Torso motion: the 2D shift of the body below the face, measured by the sender and sent with the expression.

The head pose does not say where the shoulders are: a presenter leans, breathes and shifts in the chair.
Measured on the german clip's held-out frames, a global shift of the rendered torso band onto the ground
truth gained up to 4.5 dB PSNR there. So the sender measures that shift per frame — phase correlation of the
band below the chin against the same band of a reference frame — and sends it as two extra values; the torso
field looks its image coordinates up at ``uv - shift`` (see ``nerfvc.field.fields.TorsoField``). A tracker
built with ``halves`` also measures the band's left and right halves and sends half their difference (two
more values: the body turning or one shoulder rising), which only the torso field's MLPs take.

Files (in the DATASET and MODEL directories): ``torso.json`` (band, working width, halves) and
``torso_reference.png`` (the reference band, 8-bit grey).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from nerfvc.errors import InputError
from nerfvc.fsutil import atomic_path, read_json, write_json_atomic

TORSO_DIMS = 2  # (dx, dy) in normalised image units (fractions of the frame's width and height)
HALVES_DIMS = 4  # (dx, dy), then (left − right) / 2 of the halves' (dx, dy), with ``halves``
TORSO_FILE = "torso.json"
TORSO_REFERENCE = "torso_reference.png"
WORK_WIDTH = 256
CHIN = 152  # mediapipe face-mesh index of the chin's lowest point
MIN_BAND = 0.12  # a band shorter than this fraction of the frame height is too small to measure


@dataclass
class TorsoBand:
    """Rows ``[top, 1)`` of the (camera-aspect) frame, as fractions of its height."""

    top: float

    def extract(self, frame: np.ndarray) -> np.ndarray:
        """uint8 RGB frame (H,W,3) → grey band (h, WORK_WIDTH) float64, at the working width."""
        h, w = frame.shape[:2]
        height = max(8, round(WORK_WIDTH * h / w))
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        grey = cv2.resize(grey, (WORK_WIDTH, height), interpolation=cv2.INTER_AREA)
        rows = (height - round(self.top * height)) // 4 * 4  # odd heights bias phaseCorrelate by 0.5 px
        return grey[height - rows :].astype(np.float64)


class TorsoTracker:
    """Shift of a frame's torso band relative to the reference band (phase correlation, sub-pixel)."""

    def __init__(self, band: TorsoBand, reference: np.ndarray, halves: bool = False):
        self.band = band
        self.reference = np.asarray(reference, np.float64)  # (h, WORK_WIDTH)
        self.halves = halves
        h, w = self.reference.shape
        self._window = np.outer(np.hanning(h), np.hanning(w))
        self._half_window = np.outer(np.hanning(h), np.hanning(w // 2))

    @property
    def dims(self) -> int:
        """Values per frame :meth:`shift` returns."""
        return HALVES_DIMS if self.halves else TORSO_DIMS

    @classmethod
    def from_dir(cls, path: str | Path) -> TorsoTracker | None:
        """The tracker stored in a DATASET or MODEL directory, or None if it has none."""
        d = Path(path)
        if not (d / TORSO_FILE).exists():
            return None
        meta = read_json(d / TORSO_FILE)
        if meta.get("top") is None:  # measured at prepare time: no torso band to track
            return None
        try:
            ref = np.asarray(Image.open(d / TORSO_REFERENCE).convert("L"))
        except (FileNotFoundError, OSError) as e:
            raise InputError(f"{d / TORSO_REFERENCE}: missing or unreadable ({e})") from e
        return cls(TorsoBand(float(meta["top"])), ref, bool(meta.get("halves", False)))

    def save(self, path: str | Path) -> None:
        """Write ``torso.json`` and ``torso_reference.png`` into ``path``."""
        d = Path(path)
        with atomic_path(d / TORSO_REFERENCE) as tmp:
            Image.fromarray(np.clip(self.reference, 0, 255).round().astype(np.uint8)).save(tmp, format="PNG")
        write_json_atomic(
            d / TORSO_FILE, {"top": self.band.top, "work_width": WORK_WIDTH, "halves": self.halves}
        )

    def shift(self, frame: np.ndarray) -> np.ndarray:
        """uint8 RGB frame (camera aspect) → torso shift (dims,) float32 in fractions of width and height."""
        band = self.band.extract(frame)
        if band.shape != self.reference.shape:
            raise InputError(
                f"torso band {band.shape} does not match the reference {self.reference.shape} "
                "(frame aspect ratio differs from the model's camera)"
            )
        # phaseCorrelate windows both inputs in place: give it copies, so the halves below see the raw band
        (dx, dy), _ = cv2.phaseCorrelate(self.reference.copy(), band.copy(), self._window)
        full_h = WORK_WIDTH * frame.shape[0] / frame.shape[1]
        if not self.halves:
            return np.array([dx / WORK_WIDTH, dy / full_h], np.float32)
        half = WORK_WIDTH // 2
        (lx, ly), _ = cv2.phaseCorrelate(
            self.reference[:, :half].copy(), band[:, :half].copy(), self._half_window
        )
        (rx, ry), _ = cv2.phaseCorrelate(
            self.reference[:, half:].copy(), band[:, half:].copy(), self._half_window
        )
        turn = ((lx - rx) / 2 / WORK_WIDTH, (ly - ry) / 2 / full_h)
        return np.array([dx / WORK_WIDTH, dy / full_h, *turn], np.float32)


def save_no_torso(path: str | Path) -> None:
    """Record in ``path`` that this person's frames have no torso band to track."""
    write_json_atomic(Path(path) / TORSO_FILE, {"top": None, "work_width": WORK_WIDTH})


def build_torso_tracker(
    reference: np.ndarray, chin_y: np.ndarray, halves: bool = True
) -> TorsoTracker | None:
    """A tracker against the ``reference`` frame from the chin's image row (fraction of the height) in the
    training frames (measuring the band's halves too with ``halves``); None when the band below the lowest
    chin is too small to measure."""
    top = float(np.clip(np.max(chin_y) + 0.04, 0.5, 1.0))
    if 1.0 - top < MIN_BAND:
        return None
    band = TorsoBand(top)
    return TorsoTracker(band, band.extract(reference), halves)
