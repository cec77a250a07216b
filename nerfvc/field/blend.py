"""Expression blend shapes read at points: ``Σ_k code_k · B_k(x)`` for dense grids ``B`` stored
vertex-major (V, C, F), where V = (r+1)³ vertices of a grid of resolution ``r`` over the unit cube (the
vertex indexing and trilinear interpolation of a dense hash-grid level). :func:`blend_lookup` runs the C++
kernel (in ``fused.cpp``: one contiguous row of C·F values per corner, forward and backward) on CPU float32
where it builds, else :func:`blend_lookup_torch`, the plain reference through
:func:`nerfvc.field.encodings.hashgrid_torch`."""

from __future__ import annotations

import torch

from nerfvc.field.encodings import hashgrid_torch
from nerfvc.field.fused import load_fused_extension


def grid_roughness_torch(grid: torch.Tensor) -> torch.Tensor:
    """Dense grid (X,Y,Z,K) → Σ over its three axes of the mean squared difference of neighbouring
    vertices (scalar), by autograd: the reference of :func:`grid_roughness`."""
    return sum((grid.diff(dim=d).square().mean() for d in range(3)), grid.new_zeros(()))


class _RoughnessFn(torch.autograd.Function):
    """:func:`grid_roughness_torch` with its gradient written out (2·Δ/n added to the later vertex of each
    pair, taken from the earlier): one difference tensor alive at a time instead of autograd's chain of
    differences, squares and slice gradients (22 → 8 ms on a 32³×32 grid, one thread)."""

    @staticmethod
    def forward(ctx, grid):
        ctx.save_for_backward(grid)
        total = grid.new_zeros(())
        for d in range(3):
            diff = grid.diff(dim=d).reshape(-1)
            total += torch.dot(diff, diff) / diff.numel()
        return total

    @staticmethod
    def backward(ctx, grad):
        (grid,) = ctx.saved_tensors
        out = torch.zeros_like(grid)
        for d in range(3):
            diff = grid.diff(dim=d)
            scale = float(2 * grad / diff.numel())
            n = grid.shape[d] - 1
            out.narrow(d, 1, n).add_(diff, alpha=scale)
            out.narrow(d, 0, n).sub_(diff, alpha=scale)
        return out


def grid_roughness(grid: torch.Tensor) -> torch.Tensor:
    """Dense grid (X,Y,Z,K) → Σ over its three axes of the mean squared difference of neighbouring vertices
    (scalar, differentiable): :func:`grid_roughness_torch` at a third of its cost."""
    return _RoughnessFn.apply(grid)


class _BlendFn(torch.autograd.Function):
    """The C++ kernel on a vertex-major table (V, C·F), with gradients for the table and the codes."""

    @staticmethod
    def forward(ctx, x, table, code, r, n_feat):
        ctx.save_for_backward(x, table, code)
        ctx.r, ctx.n_feat = r, n_feat
        ext = load_fused_extension()
        assert ext is not None
        return ext.blend_forward(x, table, code, r, n_feat, torch.get_num_threads())

    @staticmethod
    def backward(ctx, grad):
        x, table, code = ctx.saved_tensors
        ext = load_fused_extension()
        assert ext is not None
        g_table, g_code = ext.blend_backward(
            grad.contiguous(), x, table, code, ctx.r, ctx.n_feat, torch.get_num_threads()
        )
        return None, g_table, g_code, None, None


def blend_lookup_torch(x: torch.Tensor, blend: torch.Tensor, code: torch.Tensor, r: int) -> torch.Tensor:
    """Points (N,3) in [0,1]³, blend shapes (V,C,F), codes (N,C) or (1,C), resolution r → (N,F)."""
    n_codes = blend.shape[1]
    per_code = blend.permute(1, 0, 2)  # (C,V,F): one dense hash level per code channel
    b = hashgrid_torch(x, per_code, torch.full((n_codes,), r, device=x.device))  # (N,C,F)
    return torch.einsum("ncf,nc->nf", b, code.expand(x.shape[0], -1))


def blend_lookup(
    x: torch.Tensor, blend: torch.Tensor, code: torch.Tensor, r: int, cpp: bool = True
) -> torch.Tensor:
    """:func:`blend_lookup_torch` by the C++ kernel where ``cpp`` and the inputs allow it (CPU float32, kernel
    built), differentiable either way."""
    ext = load_fused_extension() if cpp and x.device.type == "cpu" and blend.dtype == torch.float32 else None
    if ext is None:
        return blend_lookup_torch(x, blend, code, r)
    n_vert, n_codes, n_feat = blend.shape
    table = blend.contiguous().view(n_vert, n_codes * n_feat)  # (V, C·F): a corner's row; no copy
    return _BlendFn.apply(x.contiguous().float(), table, code.contiguous().float(), r, n_feat)
