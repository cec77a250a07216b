"""End-to-end baseline evaluation of a clip's test split, ready to have nerfvc's points added.

``run_baselines`` reads the test split (last 20%), and for each size scores freeze-frame, next-frame and every
codec's sweep against the same ``Reference``. It returns ``SizeRun`` objects whose ``systems`` dict is exactly
what ``report.build_report`` takes; the lead adds ``systems["nerfvc"] = [RDPoint.from_eval(...)]`` scored with
``evaluate(run.ref, decoded, bitrate_kbps=...)`` and calls ``build_report``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nerfvc.eval import baselines as B
from nerfvc.eval.metrics import Reference, evaluate, prepare_reference
from nerfvc.eval.pixel import psnr, ssim
from nerfvc.eval.report import RDPoint
from nerfvc.eval.video import probe, read_frames, resize_frames, test_split

log = logging.getLogger(__name__)


@dataclass
class SizeRun:
    """Baseline results at one frame size."""

    size: int
    gt: np.ndarray
    previous: np.ndarray
    ref: Reference
    systems: dict[str, list[RDPoint]] = field(default_factory=dict)
    floors: dict[str, dict] = field(default_factory=dict)


def load_test_split(video: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(test frames, the frame just before them, info)`` at the clip's own size."""
    info = probe(video)
    start, count = test_split(info["num_frames"])
    src = read_frames(video, start - 1, count + 1)
    return src[1:], src[0], {**info, "test_frames": [start, start + count]}


def run_size(
    gt_src: np.ndarray,
    prev_src: np.ndarray,
    size: int,
    *,
    codecs: Sequence[str] = tuple(B.CODECS),
    sweeps: dict[str, Sequence[int]] | None = None,
    keep_frames: Sequence[str] = ("x265", "freeze"),
    face: bool = True,
    dists_frames: int | None = None,
    progress: Callable[[str], None] | None = None,
    keep_video: Callable[[str, str, float | None, np.ndarray], None] | None = None,
) -> SizeRun:
    """Freeze, next-frame and codec sweeps at ``size``; decoded frames kept for ``keep_frames`` systems.

    ``keep_video(codec, label, kbps, frames)`` is called for every codec rate point (e.g.
    ``VideoKeeper.add``)."""
    gt = resize_frames(gt_src, size)
    prev = resize_frames(prev_src[None], size)[0]
    ref = prepare_reference(gt, face=face)
    run = SizeRun(size, gt, prev, ref)
    say = progress or log.info

    def add(name: str, frames: np.ndarray, kbps: float | None, label: str, meta: dict) -> None:
        res = evaluate(ref, frames, bitrate_kbps=kbps, face=face, dists_frames=dists_frames)
        s = {**meta, **res["summary"]}
        keep = frames if name in keep_frames else None
        run.systems.setdefault(name, []).append(RDPoint(kbps, s, keep, label))
        say(
            f"[{size}] {name} {label}: "
            + ", ".join(f"{k}={s[k]:.4g}" for k in ("kbps", "psnr", "lpips", "dists") if k in s)
        )

    fz = B.freeze_frame(gt)
    add("freeze", fz.frames, fz.kbps, "intra CRF 23", fz.info())
    add("next", B.next_frame(gt, prev), None, "GT one frame late", {})
    for c in codecs:
        qs = (sweeps or {}).get(c) or B.CODECS[c].sweep
        for q in qs:
            r = B.encode(gt, c, q)
            label = f"{B.CODECS[c].q_name} {q}"
            add(c, r.frames, r.kbps, label, r.info())
            if keep_video is not None:
                keep_video(c, label, r.kbps, r.frames)
            if q == B.CODECS[c].q_floor:
                run.floors[c] = {"q": q, "kbps": r.kbps}
    return run


def upscale_notes(source_hw: tuple[int, int], sizes: Sequence[int]) -> list[str]:
    """Report notes for the sizes whose ground truth is an upscale of the (smaller) source frames."""
    h, w = source_hw
    up = sorted({int(s) for s in sizes if s > min(h, w)})
    return [
        f"{s} px ground truth is a bicubic upscale of the {w}x{h} px source frames: it has no extra detail. "
        f"Every system is scored against that upscale (the codecs encode it; nerfvc renders {s} px directly)."
        for s in up
    ]


def floors_only(gt_src: np.ndarray, size: int, codecs: Sequence[str] = tuple(B.CODECS)) -> dict[str, dict]:
    """Each codec's floor at ``size`` with PSNR/SSIM only (cheap; used for 128 and 1024 px)."""
    gt = resize_frames(gt_src, size)
    out = {}
    for c in codecs:
        r = B.floor(gt, c)
        out[c] = {
            **r.info(),
            "psnr": float(np.mean([psnr(a, b) for a, b in zip(gt, r.frames)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(gt, r.frames)])),
        }
    return out
