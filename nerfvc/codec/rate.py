"""Rate control (offline step choice by bisection) and a differentiable bits estimate for training."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.codec.entropy import laplace_bin_bits
from nerfvc.codec.tables import STEP_INDEX_MAX, STEP_INDEX_MIN, CodecTables

if TYPE_CHECKING:
    import torch


def clip_kbps(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    step_index: int,
    fps: float = 25.0,
    keyframe_interval: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
) -> float:
    """Actual kbps (packets incl. framing, header excluded) of the clip at a step index."""
    from nerfvc.codec.bitstream import HEADER_SIZE, encode_stream

    data = encode_stream(
        tables,
        fingerprint,
        code,
        pose,
        fps,
        keyframe_interval=keyframe_interval,
        step_index=step_index,
        rdoq=rdoq,
        frames_per_packet=frames_per_packet,
    )
    return (len(data) - HEADER_SIZE) * 8 / max(len(code), 1) * fps / 1000


def choose_step_index(
    tables: CodecTables,
    fingerprint: str,
    code: np.ndarray,
    pose: np.ndarray,
    kbps: float,
    fps: float = 25.0,
    keyframe_interval: int | None = None,
    rdoq: float = 0.0,
    frames_per_packet: int = 1,
) -> int:
    """Smallest step index (finest quality) whose coded clip fits ``kbps`` (bisection on real coded sizes).

    Returns the coarsest index if even that does not fit.
    """
    lo, hi = STEP_INDEX_MIN, STEP_INDEX_MAX
    if clip_kbps(tables, fingerprint, code, pose, hi, fps, keyframe_interval, rdoq, frames_per_packet) > kbps:
        return hi
    # Invariant: rate(hi) <= kbps; rate decreases (almost) monotonically with the index.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (
            clip_kbps(tables, fingerprint, code, pose, mid, fps, keyframe_interval, rdoq, frames_per_packet)
            <= kbps
        ):
            hi = mid
        else:
            lo = mid
    return hi


def estimate_bits(
    code: torch.Tensor,
    scales: torch.Tensor | np.ndarray,
    step: float | torch.Tensor,
    mean: torch.Tensor | None = None,
    noise: bool = True,
) -> torch.Tensor:
    """Differentiable code length (bits) of ``code (..., D)`` under the codec's quantized-Laplace model.

    ``scales (D,)`` are Laplace scales ``b`` in feature units (e.g. :func:`laplace_scales`), ``step`` the
    quantization step(s) (scalar or (D,)), ``mean`` the prediction (default 0). Quantization is modelled by
    additive uniform noise in [-step/2, step/2] when ``noise`` (training), by rounding otherwise.
    Returns bits summed over the last dim, shape ``(...)``.
    """
    import torch

    scales = torch.as_tensor(scales, dtype=code.dtype, device=code.device)
    step_t = torch.as_tensor(step, dtype=code.dtype, device=code.device)
    y = (code - (mean if mean is not None else 0.0)) / step_t  # residual in step units
    if noise:
        y = y + (torch.rand_like(y) - 0.5)
    else:
        y = y + (torch.round(y) - y).detach()
    b = torch.clamp(scales / step_t, min=1e-3)
    return laplace_bin_bits(y, b).sum(-1)


def laplace_scales(tables: CodecTables, kind: str = "key") -> np.ndarray:
    """Laplace scales ``b (D,)`` of the code dims in feature units.

    ``kind``: "key" (stationary) or "delta" (innovation, given the previous frame).
    """
    p = tables.key if kind == "key" else tables.delta
    return p.sigma[-tables.code_dim :] / math.sqrt(2.0)


def code_rate_params(tables: CodecTables, step_index: int = 0, kind: str = "delta") -> dict[str, np.ndarray]:
    """What a rate term for the code dims needs: ``scales``, ``steps``, ``mean``, ``ar`` (each (D,)).

    For delta frames use ``mean = m + ar * (previous code - m)`` as the prediction in :func:`estimate_bits`;
    for keyframes use ``kind="key"`` and the training mean ``m``.
    """
    d = tables.code_dim
    return {
        "scales": laplace_scales(tables, kind),
        "steps": tables.steps(step_index)[-d:],
        "mean": tables.mean[-d:],
        "ar": tables.ar[-d:],
    }
