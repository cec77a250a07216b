"""The codec's entropy model: a Laplace distribution quantized to unit bins (see docs/bitstream.md).

The range coder codes each prediction residual with this model (``constriction``'s ``QuantizedLaplace``);
:func:`laplace_bin_bits` is its ideal code length, the one formula behind the encoder's bit estimates
(table fitting, rate-distortion optimized quantization) and the differentiable rate term of training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_PROBABILITY = 2.0**-24  # floor of a bin's probability (bounds the bits of an outlier)


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


def _ops(x: Any) -> tuple[Any, Any, Any]:
    """``exp``, ``log2`` and the probability floor for the kind of ``x`` (float, numpy or torch)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.exp, torch.log2, lambda p: torch.clamp(p, min=MIN_PROBABILITY)
    if isinstance(x, np.ndarray | np.generic):
        return np.exp, np.log2, lambda p: np.maximum(p, MIN_PROBABILITY)
    return math.exp, math.log2, lambda p: max(p, MIN_PROBABILITY)
