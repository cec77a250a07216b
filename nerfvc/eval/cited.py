"""Numbers copied from the seed paper (Tables 1-2) for systems whose weights are not available offline.

They were measured by the paper's authors on HDTF at their own resolution and rate, not here: the report
marks them "(cited, not measured here)". The paper gives no bitrate column; it is derived from its
PSNR/b.r. ratio (b.r. in kbps).
"""

from __future__ import annotations

from nerfvc.eval.report import RDPoint

# name: (L1, SSIM, PSNR, LPIPS, CSIM, AUCON, PRMSE, PSNR/b.r.)
_PAPER = {
    "FOMM": (0.038, 0.77, 24.37, 0.12, 0.829, 0.856, 2.79, 1.41),
    "Bi-layer": (0.23, 0.55, 15.88, 0.44, 0.518, 0.626, 4.86, 0.41),
}


def cited_points() -> dict[str, list[RDPoint]]:
    """The seed paper's FOMM and Bi-layer rows as one rate point each."""
    out = {}
    for name, (l1, ssim, psnr, lpips, csim, aucon, prmse, psnr_per_kbps) in _PAPER.items():
        kbps = psnr / psnr_per_kbps
        metrics = {
            "l1": l1,
            "ssim": ssim,
            "psnr": psnr,
            "lpips": lpips,
            "csim": csim,
            "aucon": aucon,
            "prmse": prmse,
            "kbps": kbps,
        }
        out[name] = [RDPoint(kbps, metrics, None, "seed paper, Tables 1-2")]
    return out
