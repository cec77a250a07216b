"""A synthetic DATASET with analytic ground truth: a textured sphere "head" with known per-frame poses whose
lower half changes colour with the first expression coefficient, a torso ellipse that follows the head's
sideways motion (and, with ``torso_motion``, a sideways sway of its own that only the torso shift explains),
over a static gradient background. Used by the tests and for development.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfvc.camera import Camera
from nerfvc.datasetdir import (
    BACKGROUND_FILE,
    DATASET_FORMAT,
    DATASET_VERSION,
    FACE_MODEL_FILE,
    FACE_MODEL_JSON,
    FRAMES_DIR,
    MANIFEST,
    MASKS_DIR,
    features_path,
    frame_path,
    mask_path,
    split_ranges,
)
from nerfvc.features import save_features
from nerfvc.fsutil import write_json_atomic
from nerfvc.render.rays import pixel_rays, to_canonical

RADIUS = 0.09  # metres
DEPTH = 0.6
BOUNDS = [[-0.12, -0.12, -0.12], [0.12, 0.12, 0.12]]


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Rotation (3,3) from yaw (about y), pitch (about x) and roll (about z), radians."""
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def frame_features(n: int, expr_dim: int = 79) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic expressions (n,E) and poses (n,12) for a clip of ``n`` frames."""
    k = np.arange(n)
    expr = np.zeros((n, expr_dim), np.float32)
    expr[:, 0] = np.sin(k * 0.37)
    expr[:, 1] = np.cos(k * 0.23) * 0.5
    pose = np.zeros((n, 12), np.float32)
    for i in range(n):
        r = rotation(0.45 * math.sin(i * 0.21), 0.25 * math.sin(i * 0.13 + 1.0), 0.1 * math.sin(i * 0.07))
        t = [0.02 * math.sin(i * 0.11), 0.01 * math.cos(i * 0.17), DEPTH]
        pose[i, :9] = r.reshape(-1)
        pose[i, 9:] = t
    return expr, pose


def torso_shifts(n: int) -> np.ndarray:
    """The synthetic torso's own sway (n,2) in fractions of the image (independent of the head pose)."""
    k = np.arange(n)
    return np.stack([0.06 * np.sin(k * 0.61 + 0.5), 0.02 * np.cos(k * 0.43)], 1).astype(np.float32)


def _texture(p: torch.Tensor, expr0: torch.Tensor) -> torch.Tensor:
    """Canonical surface points (R,3) and per-ray first expression (R,) → rgb (R,3) in [0,1]."""
    q = p / RADIUS
    rgb = torch.stack(
        [
            0.55 + 0.3 * torch.sin(6 * q[:, 0]) * torch.cos(4 * q[:, 1]),
            0.45 + 0.3 * torch.sin(5 * q[:, 1] + 1),
            0.5 + 0.3 * torch.cos(7 * q[:, 2] + 3 * q[:, 0]),
        ],
        -1,
    )
    mouth = (q[:, 1] > 0.3).float() * 0.35 * expr0  # lower part (y down) reddens/greens with expression
    return (rgb + torch.stack([mouth, -mouth, torch.zeros_like(mouth)], -1)).clamp(0, 1)


def render_gt(
    expression: np.ndarray,
    pose: np.ndarray,
    camera: Camera,
    supersample: int = 2,
    torso: np.ndarray | None = None,
):
    """Analytic frame (H,W,3) uint8 and label mask (H,W) uint8 for one expression (E,), pose (12,) and
    torso shift (2,) (None: no sway)."""
    ss = supersample
    cam = camera.scaled(camera.width * ss, camera.height * ss)
    dirs, uv = pixel_rays(cam)
    n = dirs.shape[0]
    p = torch.from_numpy(np.asarray(pose, np.float32)).expand(n, 12)
    o, d = to_canonical(dirs, p)
    b = (o * d).sum(-1)
    a = (d * d).sum(-1)
    disc = b * b - a * ((o * o).sum(-1) - RADIUS**2)
    hit = disc > 0
    t = (-b - disc.clamp(min=0).sqrt()) / a
    pts = o + d * t[:, None]
    head = _texture(pts, torch.full((n,), float(expression[0])))
    # background gradient and torso ellipse (moves with the head's x translation)
    bg = background(cam)
    sx, sy = (0.0, 0.0) if torso is None else (float(torso[0]), float(torso[1]))
    tx = float(pose[9]) / DEPTH
    eu = (uv[:, 0] - 0.5 - tx - sx) / 0.38
    ev = (uv[:, 1] - 1.02 - sy) / 0.3
    in_torso = (eu**2 + ev**2) < 1
    torso_rgb = torch.stack([0.2 + 0.2 * uv[:, 1], 0.25 + 0.1 * uv[:, 0], 0.6 - 0.2 * uv[:, 1]], -1)
    img = torch.where(hit[:, None], head, torch.where(in_torso[:, None], torso_rgb, bg))
    label = torch.where(hit, 2, torch.where(in_torso, 1, 0)).float()
    img = img.reshape(cam.height, cam.width, 3).permute(2, 0, 1)[None]
    img = torch.nn.functional.avg_pool2d(img, ss)[0].permute(1, 2, 0)
    lab = label.reshape(cam.height, cam.width)[::ss, ::ss]
    return (img * 255 + 0.5).clamp(0, 255).byte().numpy(), lab.byte().numpy()


def background(camera: Camera) -> torch.Tensor:
    """The static background colours (H·W,3) in [0,1] for ``camera``'s pixels."""
    _, uv = pixel_rays(camera)
    return torch.stack([0.3 + 0.4 * uv[:, 0], 0.7 - 0.3 * uv[:, 1], 0.4 + 0.2 * uv[:, 0] * uv[:, 1]], -1)


def make_synthetic_dataset(
    root: str | Path,
    num_frames: int = 40,
    size: int = 64,
    fov_deg: float = 30.0,
    torso_motion: bool = False,
) -> Path:
    """Write a complete synthetic DATASET to ``root`` (first 80% train, last 20% test); with
    ``torso_motion`` the torso sways on its own and the dataset holds the true shifts (no torso tracker: a
    sender would send zeros)."""
    root = Path(root)
    (root / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    (root / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    camera = Camera.from_fov(size, size, fov_deg)
    expr, pose = frame_features(num_frames)
    torso = torso_shifts(num_frames) if torso_motion else None
    for i in range(num_frames):
        img, lab = render_gt(expr[i], pose[i], camera, torso=None if torso is None else torso[i])
        Image.fromarray(img).save(frame_path(root, i))
        Image.fromarray(lab).save(mask_path(root, i))
    bg = background(camera).reshape(size, size, 3)
    Image.fromarray((bg * 255 + 0.5).byte().numpy()).save(root / BACKGROUND_FILE)
    save_features(
        features_path(root),
        expression=expr,
        pose=pose,
        landmarks=np.zeros((num_frames, 478, 3), np.float32),
        valid=np.ones(num_frames, bool),
        timestamps=np.arange(num_frames) / 25.0,
        **({} if torso is None else {"torso": torso - torso[0]}),  # relative to the reference frame 0
    )
    from safetensors.numpy import save_file

    save_file({"head_bounds": np.asarray(BOUNDS, np.float32)}, str(root / FACE_MODEL_FILE))
    write_json_atomic(root / FACE_MODEL_JSON, {"format": "nerfvc-face-model", "head_bounds": BOUNDS})
    write_json_atomic(
        root / MANIFEST,
        {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "complete": True,
            "source": "synthetic",
            "fps": 25.0,
            "width": size,
            "height": size,
            "num_frames": num_frames,
            "split": split_ranges(num_frames),
            "camera": camera.to_dict(),
        },
    )
    return root
