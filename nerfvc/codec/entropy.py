"""The codec's entropy model: a Laplace distribution quantized to unit bins (see docs/bitstream.md).

The range coder codes each prediction residual with this model (``constriction``'s ``QuantizedLaplace``);
:func:`laplace_bin_bits` is its ideal code length, the one formula behind the encoder's bit estimates
(table fitting, rate-distortion optimized quantization) and :func:`estimate_bits`, the differentiable rate
term of training; :func:`step_scales` is the one formula for the scales the range coder codes with
(:func:`code_rate_params` gives them, in feature units, to a rate term).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from nerfvc.codec.tables import CodecTables

MIN_PROBABILITY = 2.0**-24  # floor of a bin's probability (bounds the bits of an outlier)
MIN_SCALE, MAX_SCALE = 1e-3, 1e4  # clamp of the Laplace scales in step units


def laplace_bin_bits(y: Any, b: Any) -> Any:
    """Ideal code length (bits) of the unit bin ``[y - 1/2, y + 1/2)`` under a zero-mean Laplace of scale
    ``b``, its probability floored at :data:`MIN_PROBABILITY`.

    Element-wise on Python floats, numpy arrays or torch tensors (differentiable), with the result of the
    same kind; both branches of the CDF stay finite, so gradients do too.
    """
    exp, log2, floor = _ops(y)

    def cdf(x: Any) -> Any:
        below = 0.5 * exp(((x - abs(x)) / 2) / b)  # x < 0: 0.5 e^(x/b)
        above = 1 - 0.5 * exp(-((x + abs(x)) / 2) / b)  # x >= 0: 1 - 0.5 e^(-x/b)
        return below * (x < 0) + above * (x >= 0)

    return -log2(floor(cdf(y + 0.5) - cdf(y - 0.5)))


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


def laplace_bin_mean(m: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of a value known to lie in the unit bin ``[-1/2, 1/2]`` under a Laplace centred at ``m`` with
    scale ``b`` (step units, broadcast) → offsets in ``[-1/2, 1/2]``: the minimum-MSE reconstruction of a
    quantized value relative to its bin centre. ``0`` when ``b`` is large (uniform in the bin); ``→ m`` for
    a small ``b`` when ``m`` lies inside the bin; the bin edge nearest ``m`` otherwise."""
    m = np.asarray(m, np.float64)
    b = np.asarray(b, np.float64)

    def decay_mean(length: np.ndarray) -> np.ndarray:  # mean distance from m over [0, length] under e^(-x/b)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            g = b - length / np.expm1(length / b)
        return np.where(length > 0, g, 0.0)

    inside_r, inside_l = 0.5 - np.clip(m, -0.5, 0.5), np.clip(m, -0.5, 0.5) + 0.5  # piece lengths
    mass_r, mass_l = -np.expm1(-inside_r / b), -np.expm1(-inside_l / b)
    inside = (mass_r * (m + decay_mean(inside_r)) + mass_l * (m - decay_mean(inside_l))) / (mass_r + mass_l)
    edge = 0.5 - decay_mean(np.ones_like(m))  # |m| >= 1/2: towards the edge nearest m
    return np.where(m >= 0.5, edge, np.where(m <= -0.5, -edge, inside))


def expected_bin_bits(b: np.ndarray, limit: int = 255) -> np.ndarray:
    """Expected code length (bits) of one residual per dim under the model itself: the entropy of the
    unit-bin Laplace of scale ``b (K,)`` (step units) over bins ``-limit…limit`` → ``(K,)``. The rate a
    stream is predicted to take before any frame is seen (e.g. a live call choosing its frame step)."""
    k = np.arange(-limit, limit + 1, dtype=np.float64)[:, None]  # (2L+1, 1)
    bits = laplace_bin_bits(k, np.asarray(b, np.float64)[None, :])  # (2L+1, K)
    return (np.exp2(-bits) * bits).sum(0)


def step_scales(sigma: np.ndarray, gamma: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Laplace scales ``b (K,)`` in step units that the range coder codes each residual with:
    ``sqrt((sigma / s)**2 + gamma) / sqrt(2)`` (innovation scale ``sigma`` and the quantization noise
    ``gamma`` the predictor passes on, docs/bitstream.md), clamped to [MIN_SCALE, MAX_SCALE]. Element-wise
    IEEE operations only, so encoder and decoder derive the same scales."""
    return np.clip(np.sqrt((sigma / steps) ** 2 + gamma) / math.sqrt(2.0), MIN_SCALE, MAX_SCALE)


def code_rate_params(tables: CodecTables, step_index: int = 0, kind: str = "delta") -> dict[str, np.ndarray]:
    """What a rate term for the code dims needs, from the same scales the range coder uses: ``scales``
    (Laplace ``b`` in feature units), ``steps``, ``mean``, ``ar`` (each (D,)).

    ``kind``: "key" (stationary) or "delta" (innovation, given the previous frame). For delta frames use
    ``mean = m + ar * (previous code - m)`` as the prediction in :func:`estimate_bits`; for keyframes the
    training mean ``m``.
    """
    d = tables.code_dim
    p = tables.key if kind == "key" else tables.delta
    steps = tables.steps(step_index)
    return {
        "scales": (step_scales(p.sigma, p.gamma, steps) * steps)[-d:],
        "steps": steps[-d:],
        "mean": tables.mean[-d:],
        "ar": tables.ar[-d:],
    }


def _ops(x: Any) -> tuple[Any, Any, Any]:
    """``exp``, ``log2`` and the probability floor for the kind of ``x`` (float, numpy or torch)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.exp, torch.log2, lambda p: torch.clamp(p, min=MIN_PROBABILITY)
    if isinstance(x, np.ndarray | np.generic):
        return np.exp, np.log2, lambda p: np.maximum(p, MIN_PROBABILITY)
    return math.exp, math.log2, lambda p: max(p, MIN_PROBABILITY)
