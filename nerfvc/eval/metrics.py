"""The paper's metrics on uint8 RGB frame pairs, and a batch runner that scores a decoded sequence against GT.

Per-pair functions: ``l1``, ``psnr``, ``ssim`` (full frame or a region: bbox or mask), ``lpips`` (AlexNet
v0.1), ``dists`` (DISTS, VGG16), ``csim`` (FaceNet-512 cosine similarity). Sequence metrics need landmarks
on both sequences and the GT's neutral face: ``prepare_reference(gt_frames)`` computes the GT side once,
``evaluate(ref, decoded)`` scores a decoded sequence (PSNR/SSIM/L1 full and face region, LPIPS, DISTS on a
subset of frames, CSIM, PRMSE, AUCON (landmark AUs), LMD) and, given a bitrate, the paper's trade-off
ratios. See docs/eval.md for definitions and limitations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nerfvc.eval import dists as _dists
from nerfvc.eval import face as _face
from nerfvc.eval.lpips import lpips_batch
from nerfvc.eval.options import DISTS_FRAMES
from nerfvc.metrics import Region, l1, psnr, ssim

__all__ = [
    "DISTS_FRAMES",
    "METRICS",
    "Reference",
    "csim",
    "dists",
    "evaluate",
    "l1",
    "lpips",
    "prepare_reference",
    "psnr",
    "ssim",
    "summarize",
    "tradeoffs",
]

# name -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "lpips": ("LPIPS-Alex", False),
    "dists": ("DISTS", False),
    "csim": ("CSIM", True),
    "prmse": ("PRMSE (deg)", False),
    "aucon": ("AUCON (landmark AUs)", True),
    "lmd": ("LMD (px)", False),
    "l1": ("L1", False),
    "psnr_face": ("PSNR face (dB)", True),
    "ssim_face": ("SSIM face", True),
    "fallback_share": ("frames in fallback", False),  # nerfvc+guard (docs/guard.md)
}


def lpips(a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS (AlexNet, v0.1) of two uint8 RGB frames; 0 for identical frames."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    return float(lpips_batch(a[None], b[None])[0])


def dists(a: np.ndarray, b: np.ndarray) -> float:
    """DISTS of two uint8 RGB frames (``a`` the reference); ~0 for identical frames."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    return float(_dists.dists_batch(a[None], b[None])[0])


def dists_indices(n: int, count: int) -> np.ndarray:
    """The evenly spaced frames (of ``n``) that DISTS scores: all of them when ``count >= n``, none for 0."""
    if count <= 0 or n == 0:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))


def csim(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of FaceNet-512 embeddings of the aligned faces of two frames (NaN without a face)."""
    return _face.csim(a, b)


@dataclass
class Reference:
    """The ground-truth side of an evaluation, computed once by ``prepare_reference``."""

    frames: np.ndarray
    face: _face.FaceReference | None

    @property
    def face_bbox(self) -> tuple[int, int, int, int] | None:
        """Face region (x0, y0, x1, y1): the GT landmarks' bounding box over the sequence, +10% each side."""
        return self.face.bbox if self.face is not None else None


def prepare_reference(gt_frames: Sequence[np.ndarray] | np.ndarray, *, face: bool = True) -> Reference:
    """Landmarks, poses, neutral face, AU presence and embeddings of the GT frames (uint8 RGB)."""
    frames = np.asarray(gt_frames)
    return Reference(frames=frames, face=_face.face_reference(frames) if face else None)


def evaluate(
    ref: Reference,
    decoded: Sequence[np.ndarray] | np.ndarray,
    *,
    bitrate_kbps: float | None = None,
    face: bool = True,
    use_lpips: bool = True,
    dists_frames: int | None = None,
    region: Region = None,
) -> dict:
    """Score ``decoded`` frames against ``ref`` (same count and size).

    Returns ``{"summary": {...}, "per_frame": {...}}``; ``summary`` holds the means (PRMSE: RMSE over frames
    and the 3 angles; AUCON: fraction of (frame, AU) pairs whose presence agrees) and, with ``bitrate_kbps``,
    the trade-off ratios. DISTS (VGG16, ~25x slower than LPIPS on a CPU) scores only ``dists_frames``
    evenly spaced frames (default ``DISTS_FRAMES``; 0 turns it off, and it is skipped when its weight files
    are not installed); the other frames hold NaN in ``per_frame["dists"]``. The face region defaults to the
    GT landmarks' bbox (``Reference.face_bbox``).
    """
    dec = np.asarray(decoded)
    gt = ref.frames
    if dec.shape != gt.shape:
        raise ValueError(f"decoded frames {dec.shape} do not match the ground truth {gt.shape}")
    reg = region if region is not None else ref.face_bbox
    pf: dict[str, np.ndarray] = {
        "l1": np.array([l1(a, b) for a, b in zip(gt, dec)]),
        "psnr": np.array([psnr(a, b) for a, b in zip(gt, dec)]),
        "ssim": np.array([ssim(a, b) for a, b in zip(gt, dec)]),
    }
    if reg is not None:
        pf["psnr_face"] = np.array([psnr(a, b, reg) for a, b in zip(gt, dec)])
        pf["ssim_face"] = np.array([ssim(a, b, reg) for a, b in zip(gt, dec)])
    if use_lpips:
        pf["lpips"] = lpips_batch(gt, dec)
    k = DISTS_FRAMES if dists_frames is None else dists_frames
    if k > 0 and _dists.available():
        idx = dists_indices(len(gt), k)
        pf["dists"] = np.full(len(gt), np.nan)
        pf["dists"][idx] = _dists.dists_batch(gt[idx], dec[idx])
    if face and ref.face is not None:
        fs = _face.face_scores(ref.face, dec)
        pf.update(fs)
    return {"summary": summarize(pf, bitrate_kbps), "per_frame": pf}


def summarize(pf: dict[str, np.ndarray], bitrate_kbps: float | None = None) -> dict[str, float]:
    """Sequence-level numbers from per-frame arrays (see ``evaluate``)."""
    s: dict[str, float] = {}
    for k in ("l1", "psnr", "ssim", "psnr_face", "ssim_face", "lpips", "dists", "csim", "lmd"):
        if k in pf:
            v = np.asarray(pf[k], np.float64)
            fin = v[np.isfinite(v)]
            # PSNR: identical frames (inf) are left out of the mean; inf only if every frame is identical
            s[k] = float(fin.mean()) if len(fin) else (float("inf") if np.isposinf(v).any() else float("nan"))
    if "pose_err" in pf:
        e = np.asarray(pf["pose_err"])
        s["prmse"] = float(np.sqrt(np.nanmean(e**2))) if np.isfinite(e).any() else float("nan")
        s["face_missing"] = float(1 - np.mean(pf["face_ok"]))
    if "au_agree" in pf:
        agree, gt_on = pf["au_agree"], pf["au_gt"]
        s["aucon"] = float(agree.mean())
        # agreement on the (frame, AU) pairs where the GT shows the AU: a frozen face cannot fake this one
        s["au_recall"] = float(agree[gt_on].mean()) if gt_on.any() else float("nan")
        for j, name in enumerate(_face.AU_NAMES):
            s[f"au_rate_gt_{name}"] = float(gt_on[:, j].mean())
    if bitrate_kbps is not None:
        s["kbps"] = float(bitrate_kbps)
        s.update(tradeoffs(s, bitrate_kbps))
    return s


def tradeoffs(summary: dict[str, float], kbps: float) -> dict[str, float]:
    """The paper's trade-off ratios with bitrate in kbps: SSIM/b.r., PSNR/b.r., CSIM/b.r., AUCON/b.r.
    (higher is better) and LPIPS×b.r., PRMSE×b.r. (lower is better), plus DISTS×b.r. (not in the paper)."""
    out = {}
    for k in ("ssim", "psnr", "csim", "aucon"):
        if k in summary and kbps > 0:
            out[f"{k}_per_kbps"] = summary[k] / kbps
    for k in ("lpips", "dists", "prmse"):
        if k in summary:
            out[f"{k}_x_kbps"] = summary[k] * kbps
    return out
