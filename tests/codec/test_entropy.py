"""The entropy model's one bin-probability formula, for floats, numpy arrays and torch tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import laplace

from nerfvc.codec.entropy import MIN_PROBABILITY, laplace_bin_bits


def test_bin_bits_match_the_laplace_cdf_for_every_kind_of_input():
    y = np.array([-40.0, -3.25, -0.5, -0.1, 0.0, 0.3, 0.5, 2.75, 40.0])
    b = np.array([0.2, 1.0, 0.7, 3.0, 0.05, 1.5, 0.5, 2.0, 0.2])
    p = laplace.cdf(y + 0.5, scale=b) - laplace.cdf(y - 0.5, scale=b)
    want = -np.log2(np.maximum(p, MIN_PROBABILITY))
    np.testing.assert_allclose(laplace_bin_bits(y, b), want, rtol=1e-9)
    scalar = [laplace_bin_bits(float(yi), float(bi)) for yi, bi in zip(y, b)]
    assert all(isinstance(v, float) for v in scalar)
    np.testing.assert_array_equal(scalar, laplace_bin_bits(y, b))  # bit-identical: the coder relies on it
    yt = torch.tensor(y, requires_grad=True)
    bits = laplace_bin_bits(yt, torch.tensor(b))
    np.testing.assert_allclose(bits.detach().numpy(), want, rtol=1e-9)
    bits.sum().backward()
    assert torch.isfinite(yt.grad).all()
    assert yt.grad[4] == 0 and yt.grad[3] < 0 < yt.grad[5]  # fewest bits at the bin of the mode


def test_far_outliers_cost_the_floor():
    assert laplace_bin_bits(1e6, 1.0) == pytest.approx(24.0)
