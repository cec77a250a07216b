"""Input encodings: a multiresolution hash grid (C++/OpenMP kernel or pure torch) and 2D feature planes.

The hash grid's two implementations compute the same function (same hash, same interpolation), so a model
trained with the C++ kernel renders with the torch fallback and vice versa; the kernel is used for CPU tensors
when a compiler is available, the torch path otherwise (and on CUDA, where it is the device-agnostic path).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nerfvc.field.cpp import load_kernel

log = logging.getLogger(__name__)

_PRIMES = (1, 2654435761, 805459861)


def load_cpp_extension() -> ModuleType | None:
    """The C++ hash-grid kernel (built on first use, see :mod:`nerfvc.field.cpp`), or None."""
    return load_kernel("hashgrid")


class _HashGridFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, res)
        ctx.table_size = table.shape[1]
        return load_cpp_extension().hashgrid_forward(x, table, res, torch.get_num_threads())  # type: ignore[union-attr]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, res = ctx.saved_tensors
        grad = load_cpp_extension().hashgrid_backward(  # type: ignore[union-attr]
            grad_out.contiguous(), x, res, ctx.table_size, torch.get_num_threads()
        )
        return None, grad, None


def hashgrid_torch(x: torch.Tensor, table: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    """Pure-torch hash grid: ``x`` (N,3) in [0,1], ``table`` (L,T,F), ``res`` (L,) → (N,L,F)."""
    n_levels, size, n_feat = table.shape
    r = res.to(x.device).view(1, n_levels, 1).float()  # (1,L,1)
    p = x.clamp(0, 1).unsqueeze(1) * r  # (N,L,3)
    i0 = torch.minimum(p.floor(), r - 1).long()  # (N,L,3)
    w = p - i0.float()  # (N,L,3)
    side = (res.to(x.device) + 1).view(1, n_levels)  # (1,L)
    dense = (side**3 <= size).view(1, n_levels)  # (1,L)
    flat = table.reshape(n_levels * size, n_feat)
    offs = (torch.arange(n_levels, device=x.device) * size).view(1, n_levels)
    out = torch.zeros(x.shape[0], n_levels, n_feat, dtype=table.dtype, device=x.device)
    for c in range(8):
        bits = torch.tensor([c & 1, (c >> 1) & 1, (c >> 2) & 1], device=x.device)
        v = i0 + bits  # (N,L,3)
        wc = torch.where(bits.bool(), w, 1 - w).prod(-1)  # (N,L)
        dense_idx = v[..., 0] + side * (v[..., 1] + side * v[..., 2])
        hashed = (v[..., 0] * _PRIMES[0]) ^ (v[..., 1] * _PRIMES[1]) ^ (v[..., 2] * _PRIMES[2])
        idx = torch.where(dense, dense_idx, hashed & (size - 1)) + offs  # (N,L)
        out = out + wc.unsqueeze(-1) * flat[idx]
    return out


@dataclass
class HashGridConfig:
    """Multiresolution hash grid over the unit cube."""

    levels: int = 16
    features: int = 2
    log2_table: int = 15
    base_res: int = 16
    max_res: int = 512
    init_scale: float = 1e-4
    implementation: Literal["auto", "cpp", "torch"] = "auto"

    @property
    def out_dim(self) -> int:
        return self.levels * self.features


class HashGrid(nn.Module):
    """``x`` (N,3) in [0,1]^3 → features (N, levels·features)."""

    res: torch.Tensor  # (levels,) int64 grid resolution per level (a buffer)

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        if cfg.features not in (1, 2, 4, 8) or cfg.log2_table > 24:
            raise ValueError("hash grid: features must be 1, 2, 4 or 8 and log2_table <= 24")
        self.cfg = cfg
        growth = math.exp((math.log(cfg.max_res) - math.log(cfg.base_res)) / max(cfg.levels - 1, 1))
        res = [math.floor(cfg.base_res * growth**i) for i in range(cfg.levels)]
        self.register_buffer("res", torch.tensor(res, dtype=torch.int64), persistent=False)
        size = 2**cfg.log2_table
        self.table = nn.Parameter(
            torch.empty(cfg.levels, size, cfg.features).uniform_(-1, 1) * cfg.init_scale
        )

    def uses_cpp(self, x: torch.Tensor) -> bool:
        """Whether ``x`` would be encoded by the C++ kernel."""
        if self.cfg.implementation == "torch" or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        ext = load_cpp_extension()
        if ext is None and self.cfg.implementation == "cpp":
            raise RuntimeError(
                "hash grid: implementation='cpp' requested but the C++ kernel could not be built"
            )
        return ext is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lookup(x, self.table, self.res)

    def lookup(self, x: torch.Tensor, table: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        """Another ``table`` (L',T',F) at resolutions ``res`` (L',) read by this grid's implementation:
        ``x`` (N,3) → (N, L'·F). A level is dense (no hashing) where (res+1)³ ≤ T'."""
        x = x.contiguous().float()
        if self.uses_cpp(x):
            out = _HashGridFn.apply(x, table, res)
        else:
            out = hashgrid_torch(x, table, res)
        return out.reshape(x.shape[0], -1)


@dataclass
class PlaneGridConfig:
    """Multiresolution 2D feature planes (dense, bilinear via ``grid_sample``)."""

    resolutions: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    features: int = 4
    init_scale: float = 1e-2

    @property
    def out_dim(self) -> int:
        return len(self.resolutions) * self.features


class PlaneGrid(nn.Module):
    """``uv`` (N,2) in [0,1]^2 → features (N, levels·features)."""

    def __init__(self, cfg: PlaneGridConfig):
        super().__init__()
        self.cfg = cfg
        self.planes = nn.ParameterList(
            nn.Parameter(torch.randn(1, cfg.features, r, r) * cfg.init_scale) for r in cfg.resolutions
        )

    def forward(self, uv: torch.Tensor) -> torch.Tensor:
        g = (uv * 2 - 1).view(1, -1, 1, 2)  # (1,N,1,2)
        feats = [
            F.grid_sample(p, g, mode="bilinear", padding_mode="border", align_corners=False)
            for p in self.planes
        ]  # each (1,C,N,1)
        return torch.cat(feats, 1)[0, :, :, 0].t()  # (N, levels·C)
