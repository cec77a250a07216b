"""Image quality metrics on float images in [0,1] (H,W,3): PSNR and SSIM (Gaussian 11×11, σ=1.5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0,1]."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two images (H,W,3) in [0,1], per channel then averaged (Wang et al. 2004 constants)."""
    x = a.float().permute(2, 0, 1)[:, None]  # (3,1,H,W)
    y = b.float().permute(2, 0, 1)[:, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]  # (1,1,11,11)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
