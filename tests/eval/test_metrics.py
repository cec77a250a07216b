"""Pixel metrics, LPIPS, DISTS and CSIM: identities and the official reference values."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from nerfvc.eval import dists as ds
from nerfvc.eval import lpips as lp
from nerfvc.eval.metrics import (
    csim,
    dists,
    dists_indices,
    evaluate,
    l1,
    lpips,
    prepare_reference,
    psnr,
    ssim,
    tradeoffs,
)

from .conftest import METRICS_REF, need

# ResultsCalibra values of the official implementations (metrics_ref/README.md)
REF = {
    "I03": (0.7237, 21.11, 0.6993),
    "I04": (0.2572, 20.99, 0.9978),
    "I06": (0.0508, 27.01, 0.9989),
    "I08": (0.0520, 23.30, 0.9669),
    "I19": (0.4253, 21.62, 0.6519),
}
# DISTS of the official DISTS_pytorch on the same pairs (metrics_ref/README.md)
DISTS_REF = {"I03": 0.4742, "I04": 0.1424, "I06": 0.0683, "I08": 0.0287, "I19": 0.3123}


def _pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array(Image.open(need(METRICS_REF / "ref_dir" / f"{name}.png")).convert("RGB"))
    dist = np.array(Image.open(METRICS_REF / "dist_dir" / f"{name}.png").convert("RGB"))
    return ref, dist


@pytest.mark.parametrize("name", sorted(REF))
def test_reference_values(name):
    a, b = _pair(name)
    want_lpips, want_psnr, want_ssim = REF[name]
    assert lpips(a, b) == pytest.approx(want_lpips, abs=1e-3)
    assert psnr(a, b) == pytest.approx(want_psnr, abs=0.006)
    assert ssim(a, b) == pytest.approx(want_ssim, abs=1e-4)


def test_dists_reference_values():
    """The batch API on a low-distortion pair and the single-pair API (reference first) on a high-distortion
    one both match the reference implementation (the other three of DISTS_REF: the same check, slower)."""
    low, high = _pair("I08"), _pair("I03")
    got = ds.dists_batch(low[0][None], low[1][None], batch=1)
    np.testing.assert_allclose(got, [DISTS_REF["I08"]], atol=1e-3)
    assert dists(*high) == pytest.approx(DISTS_REF["I03"], abs=1e-3)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _code_executing_pickle(path):
    """A checkpoint whose unpickling would call a function."""
    path.write_bytes(pickle.dumps({"x": _Evil()}))
    return path


def test_dists_weights_use_safe_loaders(tmp_path):
    bad = _code_executing_pickle(tmp_path / "bad.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        ds.convert_weights(bad, ds._dists_weights_path())
    w = ds.load_weights()
    assert w["alpha"].shape == (1475,) and w["beta"].shape == (1475,)
    assert w["conv12.weight"].shape == (512, 512, 3, 3)


def test_dists_indices():
    assert dists_indices(100, 0).tolist() == []
    assert dists_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert dists_indices(100, 3).tolist() == [0, 50, 99]


def test_identical_frames(face_frame):
    f = face_frame
    assert psnr(f, f) == float("inf")
    assert ssim(f, f) == pytest.approx(1.0)
    assert l1(f, f) == 0.0
    assert lpips(f, f) == pytest.approx(0.0, abs=1e-6)
    assert dists(f, f) == pytest.approx(0.0, abs=1e-5)
    assert csim(f, f) == pytest.approx(1.0, abs=1e-5)


def test_regions_bbox_and_mask_agree():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    bbox = (10, 5, 60, 50)
    mask = np.zeros((64, 80), bool)
    mask[5:50, 10:60] = True
    crop = (slice(5, 50), slice(10, 60))
    assert psnr(a, b, bbox) == pytest.approx(psnr(a[crop], b[crop]))
    assert psnr(a, b, mask) == pytest.approx(psnr(a[crop], b[crop]))
    assert l1(a, b, mask) == pytest.approx(l1(a[crop], b[crop]))
    assert ssim(a, b, bbox) == pytest.approx(ssim(a[crop], b[crop]))
    with pytest.raises(ValueError):
        psnr(a, b[:10])


def test_sequence_identity_and_tradeoffs(german):
    from nerfvc.eval.video import resize_frames

    gt = resize_frames(german[400:404], 128)
    ref = prepare_reference(gt)
    res = evaluate(ref, gt.copy(), bitrate_kbps=2.0, dists_frames=2)
    s = res["summary"]
    assert np.isfinite(res["per_frame"]["dists"]).tolist() == [True, False, False, True]
    assert s["dists"] == pytest.approx(0.0, abs=1e-5)
    assert s["psnr"] == float("inf") and s["ssim"] == pytest.approx(1.0)
    assert s["prmse"] == pytest.approx(0.0, abs=1e-6) and s["aucon"] == 1.0 and s["lmd"] == pytest.approx(0.0)
    assert s["csim"] == pytest.approx(1.0, abs=1e-5)
    assert s["ssim_per_kbps"] == pytest.approx(0.5) and s["lpips_x_kbps"] == pytest.approx(s["lpips"] * 2)
    assert tradeoffs({"prmse": 1.5, "csim": 0.9}, 10.0) == {"prmse_x_kbps": 15.0, "csim_per_kbps": 0.09}


def test_weight_unpickler_refuses_code(tmp_path):
    bad = _code_executing_pickle(tmp_path / "bad.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        lp.convert_alexnet_weights(bad)
