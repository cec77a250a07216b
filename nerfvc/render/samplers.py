"""Samplers along rays: stratified (coarse), inverse-CDF importance (fine), and an occupancy grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def stratified(t_near: torch.Tensor, t_far: torch.Tensor, n: int, jitter: bool) -> torch.Tensor:
    """Bin edges (R,n+1) evenly between t_near and t_far (R,); ``jitter`` moves the inner edges randomly."""
    s = torch.linspace(0, 1, n + 1, device=t_near.device).expand(t_near.shape[0], n + 1)
    if jitter:
        s = s + (torch.rand_like(s) - 0.5) / n
        s = torch.cat([s[:, :1] * 0, s[:, 1:-1].clamp(0, 1), s[:, -1:] * 0 + 1], 1).sort(-1).values
    return t_near[:, None] + (t_far - t_near)[:, None] * s


def importance(edges: torch.Tensor, weights: torch.Tensor, n: int, jitter: bool) -> torch.Tensor:
    """New bin edges (R,n+1) from the piecewise-constant pdf of ``weights`` (R,B) over ``edges`` (R,B+1).

    Weights are dilated by one bin and padded (as in mip-NeRF) so thin surfaces are not missed.
    """
    w = F.max_pool1d(weights.detach().unsqueeze(1), 3, 1, 1).squeeze(1)  # (R,B)
    w = w + 0.01 * w.mean(-1, keepdim=True) + 1e-5
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1).clamp(max=1.0)  # (R,B+1)
    u = torch.linspace(0, 1, n + 1, device=edges.device).expand(edges.shape[0], n + 1).contiguous()
    if jitter:
        u = (u + (torch.rand_like(u) - 0.5) / n).clamp(0, 1).sort(-1).values
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[1] - 1)  # (R,n+1)
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    e0, e1 = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = ((u - c0) / (c1 - c0).clamp(min=1e-8)).clamp(0, 1)
    return (e0 + frac * (e1 - e0)).detach()


class OccupancyGrid(nn.Module):
    """A res³ grid over the unit cube of max-over-expressions density, thresholded into an occupancy mask.

    Cells start occupied, or as :meth:`set_prior` says (training carves the masks' visual hull before the
    first step); the first :meth:`update` replaces that with the field's density, later ones blend with an
    exponential decay (a cell stays occupied if any recent expression made it dense). A prior also bounds
    every later mask: a cell it rules out stays empty.
    """

    density: torch.Tensor  # buffers (see __init__)
    mask: torch.Tensor
    prior: torch.Tensor | None

    def __init__(self, res: int = 64):
        super().__init__()
        self.res = res
        self.register_buffer("density", torch.zeros(res, res, res))
        self.register_buffer("mask", torch.ones(res, res, res, dtype=torch.bool))
        self.register_buffer("prior", None, persistent=False)  # (res,res,res) bool, training only

    def set_prior(self, prior: torch.Tensor) -> None:
        """Cells (res,res,res) bool that may hold density at all; the mask becomes ``mask & prior``."""
        self.prior = prior.to(self.mask.device, torch.bool)
        self.mask &= self.prior

    def cell_points(self, jitter: bool) -> torch.Tensor:
        """Points (res³,3) in [0,1]³, one per cell (index order z-major like ``density``)."""
        r = torch.arange(self.res, device=self.density.device, dtype=torch.float32)
        g = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # (x,y,z) index
        off = torch.rand_like(g) if jitter else torch.full_like(g, 0.5)
        return (g + off) / self.res

    @torch.no_grad()
    def update(self, density: torch.Tensor, threshold: float, decay: float = 0.95) -> None:
        """Blend new per-cell densities (res³,) in and rebuild the (one-cell dilated) mask."""
        new = density.view(self.res, self.res, self.res)
        self.density.copy_(torch.maximum(self.density * decay, new))
        occ = (self.density > threshold).float()[None, None]
        mask = F.max_pool3d(occ, 3, 1, 1)[0, 0] > 0
        self.mask.copy_(mask if self.prior is None else mask & self.prior)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Occupied? for points ``x`` (...,3) in [0,1]³ → bool (...)."""
        i = (x * self.res).long().clamp(0, self.res - 1)
        return self.mask[i[..., 0], i[..., 1], i[..., 2]]

    @property
    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
