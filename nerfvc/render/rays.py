"""Rays: pixel → camera-space direction, camera → canonical head space, and ray/box intersection.

All functions take and return tensors on the caller's device (CPU or CUDA).
"""

from __future__ import annotations

import torch

from nerfvc.camera import Camera


def pixel_rays(camera: Camera, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel of ``camera``'s image, row-major: directions (H·W,3) with z=1, uv (H·W,2) in [0,1]."""
    i, j = torch.meshgrid(
        torch.arange(camera.height, device=device, dtype=torch.float32),
        torch.arange(camera.width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return pixel_dirs(camera, j.reshape(-1) + 0.5, i.reshape(-1) + 0.5)


def pixel_dirs(camera: Camera, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions ``u``, ``v`` (R,) (pixel centres at +0.5) → directions (R,3), uv (R,2) in [0,1]."""
    d = torch.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)], -1)
    uv = torch.stack([u / camera.width, v / camera.height], -1)
    return d, uv


def to_canonical(dirs: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera rays through the origin ``dirs`` (R,3) → canonical origins, directions (R,3) for poses (R,12)
    or one pose (1,12) shared by all rays.

    ``X_cam = R X_can + t``, so ``X_can = Rᵀ (X_cam − t)``; the parameter ``t`` along the ray is unchanged.
    """
    rot = pose[:, :9].reshape(-1, 3, 3)  # (R,3,3)
    trans = pose[:, 9:12]  # (R,3)
    rt = rot.transpose(1, 2)
    origin = -(rt @ trans.unsqueeze(-1)).squeeze(-1)
    if pose.shape[0] == 1:  # one pose for every ray (a frame): one (R,3)x(3,3) product, dᵀR = (Rᵀd)ᵀ
        direction = dirs @ rot[0]
    else:
        direction = (rt @ dirs.unsqueeze(-1)).squeeze(-1)
    return origin.expand_as(direction), direction


def intersect_box(
    origin: torch.Tensor, direction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, near: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the box [lo, hi]: t_near (R,), t_far (R,), hit (R,) bool."""
    inv = torch.where(direction.abs() < 1e-9, 1e-9, direction).reciprocal_()
    t0 = (lo - origin).mul_(inv)  # (R,3)
    t1 = (hi - origin).mul_(inv)
    t_near = torch.minimum(t0, t1).amax(-1).clamp_(min=near)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far, t_far > t_near
