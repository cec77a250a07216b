"""Pixel metrics on RGB frame pairs: L1, PSNR, SSIM, over the full frame or a region — the project's one
definition, used by training, evaluation, the embedding and the benchmarks.

Frames are uint8 RGB ``(H, W, 3)`` or float RGB in [0, 1] (numpy arrays or torch tensors; a float frame is
the uint8 frame / 255, so both give the same values).

Conventions (checked against ``../shared/data/metrics_ref``):
- L1: mean absolute difference of RGB values scaled to [0, 1].
- PSNR: on RGB, peak 255 (1 for float frames), ``inf`` for identical frames.
- SSIM: on the luma channel, 11x11 Gaussian window with sigma 1.5, "valid" filtering (no padding), K1 = 0.01,
  K2 = 0.03, L = 255, no downsampling (the MATLAB / IQA-PyTorch convention of the reference table). The luma
  that reproduces the table to 1e-4 is IQA-PyTorch's default: full-range BT.601 / YIQ
  ``Y = 0.299 R + 0.587 G + 0.114 B`` on [0, 255], rounded to integers. (Studio-range YCbCr luma, which the
  table's README names, gives values up to 0.03 higher on these pairs; checked.)

A *region* is ``None`` (full frame), a bbox ``(x0, y0, x1, y1)`` in pixels (half-open), or a boolean mask
``(H, W)``. With a bbox both frames are cropped; with a mask, L1/PSNR average over the mask pixels and SSIM
averages its map over the mask (cropped to the valid-filter area).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

Region = tuple[int, int, int, int] | np.ndarray | None

_WIN = 11
_SIGMA = 1.5


def _frame255(a: Any) -> np.ndarray:
    """A frame (uint8, or float in [0, 1]; numpy or torch) as float64 RGB on the [0, 255] scale."""
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    x = a.astype(np.float64)
    return x * 255.0 if np.issubdtype(a.dtype, np.floating) else x


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB frames, got {a.shape}")


def _pair(a: Any, b: Any, region: Region) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Both frames on the [0, 255] scale, checked, with a bbox region applied (cropped) or its mask."""
    a, b = _frame255(a), _frame255(b)
    _check(a, b)
    if region is None:
        return a, b, None
    if isinstance(region, np.ndarray) and region.dtype == bool:
        if region.shape != a.shape[:2]:
            raise ValueError(f"mask shape {region.shape} does not match frame {a.shape[:2]}")
        return a, b, region
    x0, y0, x1, y1 = (round(float(v)) for v in region)
    h, w = a.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty region {region} for a {w}x{h} frame")
    return a[y0:y1, x0:x1], b[y0:y1, x0:x1], None


def l1(a: Any, b: Any, region: Region = None) -> float:
    """Mean absolute RGB difference in [0, 1] units."""
    a, b, m = _pair(a, b, region)
    d = np.abs(a - b) / 255.0
    return float(d[m].mean() if m is not None else d.mean())


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error at signal ``peak``; ``inf`` when ``mse`` is 0."""
    mse = float(mse)
    return math.inf if mse <= 0 else 10 * math.log10(peak**2 / mse)


def psnr(a: Any, b: Any, region: Region = None) -> float:
    """PSNR in dB on RGB (peak 255, or 1 for float frames); ``inf`` when the frames are identical."""
    a, b, m = _pair(a, b, region)
    d = (a - b) ** 2
    return psnr_from_mse(d[m].mean() if m is not None else d.mean(), 255.0)


def rgb_to_y(a: Any) -> np.ndarray:
    """Full-range BT.601 (YIQ) luma of an RGB frame, rounded, as float64 in [0, 255]."""
    return _luma(_frame255(a))


def _luma(x: np.ndarray) -> np.ndarray:
    return np.round(0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])


def _gauss() -> np.ndarray:
    g = np.exp(-((np.arange(_WIN) - _WIN // 2) ** 2) / (2 * _SIGMA**2))
    return g / g.sum()


def _filt(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter, 'valid' region only."""
    g = _gauss()
    y = correlate1d(correlate1d(x, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    r = _WIN // 2
    return y[r : x.shape[0] - r, r : x.shape[1] - r]


def ssim_map(a: Any, b: Any) -> np.ndarray:
    """SSIM map on the Y channel ('valid' area: 10 px smaller than the frame in each dimension)."""
    return _ssim_map255(_frame255(a), _frame255(b))


def _ssim_map255(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x, y = _luma(a), _luma(b)
    if min(x.shape) < _WIN:
        raise ValueError(f"SSIM needs frames of at least {_WIN}x{_WIN}, got {x.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _filt(x), _filt(y)
    sxx = _filt(x * x) - mx * mx
    syy = _filt(y * y) - my * my
    sxy = _filt(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(a: Any, b: Any, region: Region = None) -> float:
    """SSIM (Y channel, MATLAB-style) over the frame or a region."""
    a, b, m = _pair(a, b, region)
    s = _ssim_map255(a, b)
    if m is None:
        return float(s.mean())
    r = _WIN // 2
    mm = m[r : m.shape[0] - r, r : m.shape[1] - r]
    if not mm.any():
        raise ValueError("mask region is empty inside the SSIM valid area")
    return float(s[mm].mean())
