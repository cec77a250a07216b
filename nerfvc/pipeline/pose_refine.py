"""The sender's analysis by synthesis of the head pose: turn and move each frame's head so that the person's
NeRF, rendered small as the receiver renders it, matches the camera frame.

The tracker fits the pose to 478 landmarks; the NeRF draws the head where it learned those fits put it on the
training frames. On held-out frames the outline of the head, the hair and the shoulders lands a pixel or two
off the camera's — the largest error on most clips (docs/face.md "Refining the pose at the sender"). The
sender holds the receiver's model, so it searches for the pose that draws the frame best. Nothing changes at
the receiver or in the bitstream; the refined pose is coded like the tracker's. Light to import (no torch):
the CLI reads :class:`PoseRefineConfig`'s defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.errors import InputError

if TYPE_CHECKING:
    from nerfvc.render.renderer import Renderer


# Pose refinement: finite-difference steps of the Gauss-Newton search, rotation (rad, 0.17°) and translation
# (a share of the head's distance from the camera: 1 mm at 0.5 m)
POSE_ROTATION_STEP = 3e-3
POSE_TRANSLATION_STEP = 2e-3
# The largest correction kept (rotation, degrees; translation, share of the distance): beyond it the fit has
# found another picture, not the tracker's error, and the frame keeps the tracked pose
POSE_MAX_ROTATION_DEG = 5.0
POSE_MAX_TRANSLATION = 0.05


@dataclass(frozen=True)
class PoseRefineConfig:
    """How hard the sender searches for each frame's head pose (docs/face.md "Refining the pose at the
    sender")."""

    iterations: int = 2  # Levenberg-Marquardt steps per frame (0 = send the tracker's pose)
    size: int = 96  # longer side of the picture the fit renders and compares (at most the camera's), px
    # what turning the head 1° away from the tracker's rotation costs, in mean squared colour error per pixel
    # channel (translation is free): fitting the outline and the hair can turn the face off the orientation
    # its landmarks show; 3e-4 kept 85% of the PSNR gain and the landmark head-pose error (docs/face.md)
    rotation_prior: float = 3e-4


def check_clip(who: str, frames: np.ndarray, features: np.ndarray, pose: np.ndarray) -> None:
    """:class:`InputError` (``who: ...``) unless a clip's frames, features and poses are as many."""
    if not len(frames) == len(features) == len(pose):
        raise InputError(f"{who}: {len(frames)} frames, {len(features)} features, {len(pose)} poses")


def camera_target(who: str, frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """A camera frame (H,W,3) uint8, cropped to the model camera's aspect → the picture a refiner fits,
    (height, width, 3) uint8 (area-averaged); :class:`InputError` (``who: ...``) if it is not RGB."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"{who}: a frame must be (H, W, 3) RGB, got shape {frame.shape}")
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=cv2.INTER_AREA)


def corrected_pose(pose: np.ndarray, correction: np.ndarray) -> np.ndarray:
    """Pose (12,) = [R (row-major) | t] and a correction (6,) = [rotation vector in camera axes (rad),
    translation] → (12,): ``R' = exp(ω) R`` (a turn about the head's origin), ``t' = t + δt``."""
    r = Rotation.from_rotvec(correction[:3]).as_matrix() @ np.asarray(pose[:9], np.float64).reshape(3, 3)
    return np.concatenate([r.ravel(), np.asarray(pose[9:12], np.float64) + correction[3:6]])


class PoseRefiner:
    """Refines each frame's head pose against its camera frame: damped Gauss-Newton (Levenberg-Marquardt)
    on the squared error of the receiver's own render at ``size`` px, with a finite-difference Jacobian of
    the 6 pose parameters (13 renders a step), each frame searched from its predecessor's correction. The
    tracker fits the pose to landmarks; the NeRF draws the head where it learned those fits put it, and a
    held-out frame's outline lands a pixel or two off — the largest error on most clips (docs/face.md
    "Refining the pose at the sender"). The expression and the torso shift stay as given."""

    def __init__(self, renderer: Renderer, config: PoseRefineConfig | None = None) -> None:
        self.config = config or PoseRefineConfig()
        if self.config.iterations < 0 or self.config.rotation_prior < 0:
            raise InputError(
                f"pose refinement: need iterations >= 0 and rotation_prior >= 0, got {self.config}"
            )
        from nerfvc.train.dataset import parse_size

        self.renderer = renderer
        cam = renderer.camera
        # the picture at most the model camera's size (a finer one only repeats pixels)
        size = min(self.config.size, max(cam.width, cam.height))
        self.width, self.height = parse_size(size, cam.width, cam.height)

    def _residuals(
        self, features: np.ndarray, pose: np.ndarray, xs: list[np.ndarray], target: np.ndarray
    ) -> list[np.ndarray]:
        """Per correction ``x`` (6,) of ``xs``, (H·W·3 + 3,): the render at ``pose`` corrected by ``x`` minus
        ``target``, flattened, then the rotation prior's terms (their squares sum to H·W·3 · prior · the
        turn in degrees squared). The renders share the frame's head fields (``Renderer.render_poses``)."""
        poses = np.stack([corrected_pose(pose, x) for x in xs])  # (K,12)
        views = self.renderer.render_poses(features, poses, self.width, self.height)
        weight = np.sqrt(self.config.rotation_prior * target.size)
        return [
            np.concatenate([v.image.cpu().numpy().ravel() - target, weight * np.degrees(x[:3])])
            for v, x in zip(views, xs, strict=True)
        ]

    def refine(
        self, frame: np.ndarray, features: np.ndarray, pose: np.ndarray, start: np.ndarray | None = None
    ) -> np.ndarray:
        """One frame: camera frame (H,W,3) uint8, features (D,), tracked pose (12,) → the correction (6,)
        (:func:`corrected_pose`; zero where it would go beyond the limits), searched from ``start`` (6,) when
        that renders closer than the tracked pose (a clip's previous frame's correction)."""
        pose = np.asarray(pose, np.float64)
        if pose.shape != (12,) or not np.all(np.isfinite(pose)):
            raise InputError(f"pose refinement: a pose must be 12 finite values, got shape {pose.shape}")
        small = camera_target("pose refinement", frame, self.width, self.height)
        x = np.zeros(6)
        if self.config.iterations == 0:
            return x
        target = small.astype(np.float64).ravel() / 255  # (H·W·3,)
        depth = max(abs(float(pose[11])), 1e-3)
        h = np.array([POSE_ROTATION_STEP] * 3 + [POSE_TRANSLATION_STEP * depth] * 3)  # (6,)
        warm = start is not None and bool(np.any(start))
        xs = [x, np.asarray(start, np.float64).copy()] if warm else [x]
        residuals = self._residuals(features, pose, xs, target)
        best = int(np.argmin([r @ r for r in residuals]))  # the tracked pose unless the start draws closer
        x, res, damping = xs[best], residuals[best], 1e-3
        err = float(res @ res)
        steps = np.diag(h)  # (6,6) one parameter's step per row
        for _ in range(self.config.iterations):
            both = self._residuals(features, pose, [*(x + steps), *(x - steps)], target)
            jac = (np.stack(both[:6], 1) - np.stack(both[6:], 1)) / (2 * h)  # (H·W·3 + 3, 6) central
            a, g = jac.T @ jac, jac.T @ res
            step = -np.linalg.solve(a + damping * np.diag(np.diag(a)) + 1e-12 * np.eye(6), g)
            (trial,) = self._residuals(features, pose, [x + step], target)
            if float(trial @ trial) < err:
                x, res, err, damping = x + step, trial, float(trial @ trial), damping / 3
            else:
                damping *= 10
        too_far = np.degrees(np.linalg.norm(x[:3])) > POSE_MAX_ROTATION_DEG or np.linalg.norm(x[3:]) > (
            POSE_MAX_TRANSLATION * depth
        )
        return np.zeros(6) if too_far else x

    def refine_clip(
        self,
        frames: np.ndarray,
        features: np.ndarray,
        pose: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Every frame of a clip: frames (N,H,W,3) uint8, features (N,D), poses (N,12) → poses (N,12)."""
        check_clip("pose refinement", frames, features, pose)
        out = np.empty((len(pose), 12), np.float32)
        x = None
        for i in range(len(frames)):
            x = self.refine(frames[i], features[i], pose[i], x)
            out[i] = corrected_pose(pose[i], x)
            if progress:
                progress(i + 1, len(frames))
        return out
