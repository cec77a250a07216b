"""Fused CPU kernel for the head field's density MLP: ``relu(hashgrid(x) @ w1 + b1) @ w2 + b2`` in one pass
over tiles of points (``fused.cpp``), so the grid features and hidden activations never become full-size
tensors. :func:`fused_density_reference` is the same function in plain torch.

Weights are given as (in, out) float32 contiguous tensors (``linear.weight.t().contiguous()``); ``b1`` is
(1,H), shared by all points (a frame's codes folded in), or (N,H). The kernel uses ``torch.get_num_threads()``
OpenMP threads. ``NERFVC_NO_CPP`` disables it; ``NERFVC_CPP_MARCH`` (default ``native``) is the ``-march``
it is compiled for, each value under its own extension name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import NamedTuple

import torch

from nerfvc.field.cpp import load_kernel
from nerfvc.field.encodings import hashgrid_torch


def load_fused_extension() -> ModuleType | None:
    """The fused C++ kernel (built on first use, see :mod:`nerfvc.field.cpp`), or None."""
    return load_kernel("fused")


@contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Inside the block float32 denormals are flushed to zero (FTZ + DAZ) on the calling thread, the kernels'
    OpenMP threads and torch's intra-op threads (``fused.cpp``'s ``flush_denormals``; without the extension,
    ``torch.set_flush_denormal`` on the calling thread only); after the block they are kept again (the
    default). Yields whether every thread took the mode. Training makes denormals (Adam's second moments of
    tiny gradients), and on x86 each costs ~100 normal operations."""
    ext = load_fused_extension()
    threads = torch.get_num_threads()
    if ext is not None:
        ok = bool(ext.flush_denormals(True, threads))
    else:
        ok = bool(torch.set_flush_denormal(True))
    try:
        yield ok
    finally:
        if ext is not None:
            ext.flush_denormals(False, max(threads, torch.get_num_threads()))
        else:
            torch.set_flush_denormal(False)


def fused_density_available() -> bool:
    """Whether the fused kernel can be built (or is already loaded)."""
    return load_fused_extension() is not None


def fused_density(
    x: torch.Tensor,
    table: torch.Tensor,
    res: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> torch.Tensor:
    """``x`` (N,3) in [0,1], ``table`` (L,T,F), ``res`` (L,) int64, ``w1`` (L·F,H), ``b1`` (1,H) or (N,H),
    ``w2`` (H,O), ``b2`` (O,) → ``relu(hashgrid(x) @ w1 + b1) @ w2 + b2`` (N,O) float32. No autograd."""
    ext = load_fused_extension()
    if ext is None:
        raise RuntimeError("fused density: the C++ kernel is unavailable")
    return ext.fused_forward(x, table, res, w1, b1, w2, b2, torch.get_num_threads())


class Marched(NamedTuple):
    """Rays volume-rendered through their bins: weights (R,S) (an empty (0,S) unless asked for), premultiplied
    rgb (R,3), opacity (R,) and expected depth (R,) (Σ weight · bin middle / Σ weight, in the bins' units; 0
    where nothing weighs)."""

    weights: torch.Tensor
    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor


def fused_march(
    origin: torch.Tensor,
    direction: torch.Tensor,
    edges: torch.Tensor,
    box: torch.Tensor,
    occupancy: torch.Tensor,
    density: tuple[torch.Tensor, ...],
    color: tuple[torch.Tensor, ...] | None,
    chunk: int,
    stop: float,
    half_table: torch.Tensor | None = None,
    min_weight: float = 0.0,
    with_weights: bool = True,
) -> Marched:
    """Volume-render rays ``origin``, ``direction`` (R,3) through bins ``edges`` (R,S+1) in one C++ pass:
    ``box`` (7,) = head box low corner (3), its size (3) and 1 / the distance unit; ``occupancy`` (r,r,r)
    bool; ``density`` = (table, res, w1, b1 (1,H), w2, b2) as :func:`fused_density`; ``color`` = (wc1
    (geo[+3],Hc), bc1 (1,Hc), wc2 (Hc,3), bc2 (3,)) acting on the geometry features (and the unit view
    direction), or None for density only. Samples are marched ``chunk`` at a time and a ray stops once its
    transmittance is ≤ ``stop``; only samples whose weight is above ``min_weight`` are coloured (the others
    add nothing to the rgb). ``half_table`` (:func:`pack_half_pairs` of the table) makes the grid read
    float16 features instead. The per-sample weights are returned only ``with_weights``. Same result as
    ``nerfvc.render.fast.march_torch``."""
    ext = load_fused_extension()
    if ext is None:
        raise RuntimeError("fused march: the C++ kernel is unavailable")
    none = torch.empty(0)
    wc1, bc1, wc2, bc2 = color if color is not None else (none, none, none, none)
    w, rgb, opacity, depth = ext.fused_march(
        origin.contiguous(),
        direction.contiguous(),
        edges.contiguous(),
        box,
        occupancy.contiguous(),
        *density,
        wc1,
        bc1,
        wc2,
        bc2,
        none if half_table is None else half_table,
        chunk,
        stop,
        min_weight,
        with_weights,
        torch.get_num_threads(),
    )
    return Marched(w, rgb, opacity, depth)


HALF_MIN_NORMAL = 2.0**-14  # smallest normal float16


def half_rounded(table: torch.Tensor) -> torch.Tensor:
    """The float32 values a packed half table holds: ``table`` rounded to float16, with magnitudes below the
    smallest normal float16 (6.1e-5) flushed to zero — :func:`fused_march` widens halves by bit arithmetic,
    where a subnormal would cost a slow microcode assist per lane (a trained table holds many: the untouched
    entries keep their ~1e-4 initial scale)."""
    return _flushed_half(table).float()


def _flushed_half(table: torch.Tensor) -> torch.Tensor:
    t = table.detach()
    return torch.where(t.abs() < HALF_MIN_NORMAL, 0.0, t).to(torch.float16)


def pack_half_pairs(table: torch.Tensor) -> torch.Tensor:
    """A hash table (L,T,2) float32 → (L,T) int32 words of its two features as float16 (feature 0 in the low
    half, as :func:`fused_march` reads them), rounded as :func:`half_rounded`."""
    if table.dim() != 3 or table.shape[2] != 2:
        raise ValueError("pack_half_pairs: the table must be (L,T,2)")
    return _flushed_half(table).contiguous().view(torch.int32).view(table.shape[:2])


def fused_torso(
    uv: torch.Tensor,
    planes: list[torch.Tensor],
    deform_w: list[torch.Tensor],
    deform_b: list[torch.Tensor],
    net_w: list[torch.Tensor],
    net_b: list[torch.Tensor],
    max_offset: float,
) -> torch.Tensor:
    """A torso field for one frame in one C++ pass: ``uv`` (N,2) → deformation MLP (weights (in,out), biases;
    ReLU between layers; 2 → 2, the frame's shared inputs folded into the first bias) → offset
    ``tanh(·)·max_offset`` → bilinear features of ``planes`` (C,h,w) each at ``clamp(uv + offset, 0, 1)``
    (``F.grid_sample``, border, align_corners=False) → MLP ``net_w``/``net_b`` → sigmoid → rgba (N,4)."""
    ext = load_fused_extension()
    if ext is None:
        raise RuntimeError("fused torso: the C++ kernel is unavailable")
    return ext.fused_torso(uv, planes, deform_w, deform_b, net_w, net_b, max_offset, torch.get_num_threads())


def unit_fine_edges(coarse: torch.Tensor, neighbours: torch.Tensor, n: int, threads: int) -> torch.Tensor:
    """Coarse weights (Pc,B) and ``neighbours`` (K,C) int64 rows of ``coarse`` → fine bin edges (C,n+1) as
    fractions of a ray's span: the bin-wise maximum of the neighbours' weights over B uniform bins of [0,1],
    sampled by ``nerfvc.render.samplers.importance`` (no jitter), in one C++ pass."""
    ext = load_fused_extension()
    if ext is None:
        raise RuntimeError("fine edges: the C++ kernel is unavailable")
    return ext.unit_fine_edges(coarse, neighbours, n, threads)


def ray_box(
    origin: torch.Tensor, direction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, near: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nerfvc.render.rays.intersect_box`` in one C++ pass (identical results): t_near (R,), t_far (R,), hit
    (R,) bool. An ``origin`` expanded from one row is read as that row."""
    ext = load_fused_extension()
    if ext is None:
        raise RuntimeError("ray box: the C++ kernel is unavailable")
    o = origin[:1] if origin.shape[0] > 1 and origin.stride(0) == 0 else origin
    t_near, t_far, hit = ext.ray_box(
        o.contiguous(),
        direction.contiguous(),
        lo.contiguous(),
        hi.contiguous(),
        near,
        torch.get_num_threads(),
    )
    return t_near, t_far, hit


class FusedDensityFn(torch.autograd.Function):
    """:func:`fused_density` with gradients for ``table``, ``w1``, ``b1``, ``w2`` and ``b2`` (none for ``x``).
    The backward recomputes the grid features and the hidden layer tile by tile (the forward stores nothing
    but its inputs)."""

    @staticmethod
    def forward(ctx, x, table, res, w1, b1, w2, b2):
        ctx.save_for_backward(x, table, res, w1, b1, w2, b2)
        return fused_density(x, table, res, w1, b1, w2, b2)

    @staticmethod
    def backward(ctx, grad_out):
        ext = load_fused_extension()
        if ext is None:
            raise RuntimeError("fused density backward: the C++ kernel is unavailable")
        g_table, g_w1, g_b1, g_w2, g_b2 = ext.fused_backward(
            grad_out.contiguous(), *ctx.saved_tensors, torch.get_num_threads()
        )
        return None, g_table, None, g_w1, g_b1, g_w2, g_b2


def fused_density_reference(
    x: torch.Tensor,
    table: torch.Tensor,
    res: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> torch.Tensor:
    """:func:`fused_density` in plain torch (:func:`hashgrid_torch` and matmuls), differentiable."""
    feats = hashgrid_torch(x, table, res).reshape(x.shape[0], -1)  # (N,G)
    return torch.relu(feats @ w1 + b1) @ w2 + b2
