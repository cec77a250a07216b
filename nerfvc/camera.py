"""Pinhole camera shared by the tracker (projection) and the renderer (ray casting).

Convention: OpenCV — x right, y down, z forward (into the scene), pixels in the frame's own size, pixel
``(row i, column j)`` has its centre at ``(u, v) = (j + 0.5, i + 0.5)``. Projection: ``u = fx·X/Z + cx``,
``v = fy·Y/Z + cy``. Rendering at another size scales the intrinsics with the image (``scaled``), so the same
features render the same picture at any resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics for an image of ``width`` × ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float) -> Camera:
        """A centred camera whose field of view across the longer side is ``fov_deg``."""
        f = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
        return cls(float(f), float(f), width / 2, height / 2, int(width), int(height))

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera for an image resized to ``width`` × ``height``."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height))

    @property
    def K(self) -> np.ndarray:
        """3×3 intrinsic matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project camera-space points ``(..., 3)`` to pixels ``(..., 2)``."""
        z = points[..., 2:3]
        return np.concatenate(
            [self.fx * points[..., 0:1] / z + self.cx, self.fy * points[..., 1:2] / z + self.cy], axis=-1
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(**{k: d[k] for k in ("fx", "fy", "cx", "cy", "width", "height")})
