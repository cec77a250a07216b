"""The entropy model's one bin-probability formula, for floats, numpy arrays and torch tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import laplace

from nerfvc.codec.entropy import MIN_PROBABILITY, laplace_bin_bits, laplace_bin_mean


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


def test_bin_mean_is_the_laplace_mean_over_the_bin():
    """:func:`laplace_bin_mean` against numerical integration, inside, at the edges of and outside the
    bin, for scales from almost a point mass to almost uniform."""
    m = np.array([-3.0, -0.5, -0.3, 0.0, 0.2, 0.49, 0.5, 1.3])[:, None]  # (8, 1)
    b = np.array([1e-3, 0.1, 0.5, 2.0, 1e4])[None, :]  # (1, 5)
    u = np.linspace(-0.5, 0.5, 200_001)[:, None, None]  # (U, 1, 1)
    log_w = -np.abs(u - m) / b
    w = np.exp(log_w - log_w.max(0))
    want = (u * w).sum(0) / w.sum(0)  # (8, 5)
    got = laplace_bin_mean(np.broadcast_to(m, want.shape), np.broadcast_to(b, want.shape))
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.all(np.abs(got) <= 0.5)
    assert np.allclose(
        laplace_bin_mean(np.array([0.3, -2.0]), np.array([1e-3, 1e-3])), [0.3, -0.499], atol=1e-6
    )


def test_mmse_reconstruction_is_closer_to_the_features_than_the_bin_centres():
    """Coarse steps on held-out frames: the decoder's default output (each value moved within its bin
    towards the prediction) has a lower squared error than the bin centres, and the same bytes."""
    from nerfvc.codec import decode_stream, encode_stream, fit_codec
    from nerfvc.codec.synthetic import synthetic_features

    code, pose = synthetic_features(400, 8, seed=7)
    tables = fit_codec(code[:300], pose[:300])
    for step_index, gain in ((0, 1.0), (32, 0.85)):  # Q = 1, 4
        data = encode_stream(tables, "00" * 8, code[300:], pose[300:], step_index=step_index)
        mmse = decode_stream(data, tables, "00" * 8)[0]
        grid = decode_stream(data, tables, "00" * 8, reconstruction="grid")[0]
        err_mmse, err_grid = ((mmse - code[300:]) ** 2).mean(), ((grid - code[300:]) ** 2).mean()
        assert err_mmse < gain * err_grid, (step_index, err_mmse, err_grid)
