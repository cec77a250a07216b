"""nerfvc.metrics is the one PSNR/SSIM: training reports the numbers evaluation reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfvc import metrics
from nerfvc.eval import metrics as eval_metrics


def _pair(seed: int = 0, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, a.shape)
    noise[..., 2] *= 3  # a blue-heavy error: luma SSIM and RGB-mean SSIM disagree on it
    return a, np.clip(a + noise, 0, 255).astype(np.uint8)


def test_uint8_float_and_torch_frames_give_the_same_values():
    a, b = _pair()
    af, bf = a / 255.0, b / 255.0
    assert metrics.psnr(af, bf) == pytest.approx(metrics.psnr(a, b), abs=1e-9)
    assert metrics.psnr(torch.from_numpy(af).float(), torch.from_numpy(bf).float()) == pytest.approx(
        metrics.psnr(a, b), abs=1e-4
    )
    assert metrics.ssim(af, bf) == pytest.approx(metrics.ssim(a, b), abs=1e-12)
    assert metrics.l1(af, bf) == pytest.approx(metrics.l1(a, b), abs=1e-12)
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.psnr_from_mse(0.01) == pytest.approx(20.0)
    assert eval_metrics.psnr is metrics.psnr and eval_metrics.ssim is metrics.ssim


def test_training_reports_the_ssim_and_psnr_evaluation_reports(tmp_path, monkeypatch):
    """``nerfvc train``'s held-out scores use nerfvc.metrics (luma SSIM), not an RGB-mean SSIM of its own."""
    from nerfvc.train import trainer
    from nerfvc.train.dataset import load_dataset
    from nerfvc.train.synthetic import make_synthetic_dataset

    ds = load_dataset(make_synthetic_dataset(tmp_path / "ds", num_frames=5, size=40))
    _, rendered = _pair(1)

    class StubRenderer:
        def __init__(self, *args):
            pass

        def render(self, expression, pose, w, h):
            return rendered

    monkeypatch.setattr(trainer, "Renderer", StubRenderer)
    got = trainer.evaluate(None, ds, np.array([3, 4]))
    gts = [ds.frames[i].numpy() for i in (3, 4)]
    want_ssim = np.mean([eval_metrics.ssim(rendered, g) for g in gts])
    assert got["ssim"] == pytest.approx(want_ssim, abs=1e-12)
    assert got["psnr"] == pytest.approx(np.mean([eval_metrics.psnr(rendered, g) for g in gts]), abs=1e-9)


def test_luma_ssim_differs_from_an_rgb_mean_ssim():
    """Why one definition matters: the two SSIMs disagree on the same pair."""
    a, b = _pair()
    rgb_mean = np.mean(
        [
            metrics.ssim(np.repeat(a[..., c : c + 1], 3, -1), np.repeat(b[..., c : c + 1], 3, -1))
            for c in range(3)
        ]
    )
    assert abs(metrics.ssim(a, b) - rgb_mean) > 0.01
