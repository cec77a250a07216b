"""End-to-end baseline evaluation of a clip's test split, ready to have nerfvc's points added.

``load_test_split`` reads the test split (the last 20%, :func:`nerfvc.datasetdir.split_point`); for each
size, ``run_size`` scores freeze-frame, next-frame and every codec's sweep against the same ``Reference``.
It returns ``SizeRun`` objects whose ``systems`` dict is exactly what ``report.build_report`` takes; the lead
adds ``systems["nerfvc"] = [RDPoint.from_eval(...)]`` scored with ``evaluate(run.ref, decoded,
bitrate_kbps=...)`` and calls ``build_report``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nerfvc.argtypes import rate_list
from nerfvc.datasetdir import split_point
from nerfvc.errors import InputError
from nerfvc.eval import baselines as B
from nerfvc.eval.metrics import Reference, evaluate, prepare_reference
from nerfvc.eval.options import EvalOptions
from nerfvc.eval.report import RDPoint
from nerfvc.eval.video import VideoKeeper, resize_frames
from nerfvc.io.video import count_frames, probe, read_frame_range
from nerfvc.metrics import psnr, ssim

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
    """``(test frames, the frame just before them, info)`` at the clip's own size.

    The test frames are the clip's test split by the dataset rule (:func:`nerfvc.datasetdir.split_point`),
    so a model trained on a dataset prepared from the whole clip is never scored on a training frame.
    """
    meta, n = probe(video), count_frames(video)
    start = split_point(n)
    src = read_frame_range(video, start - 1, n - start + 1)
    info = {"width": meta.width, "height": meta.height, "fps": meta.fps, "num_frames": n}
    return src[1:], src[0], {**info, "test_frames": [start, n]}


def run_size(
    gt_src: np.ndarray,
    prev_src: np.ndarray,
    size: int,
    *,
    codecs: Sequence[str] = tuple(B.CODECS),
    sweeps: Mapping[str, Sequence[int]] | None = None,
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


# -- nerfvc eval / eval-baselines: the whole run -------------------------------------------------------------
def run_eval(args: EvalOptions) -> dict[str, Path]:
    """Run the baselines (and nerfvc, when ``args.model`` is set), write the report into ``args.out`` and
    return its files (what ``nerfvc eval`` / ``nerfvc eval-baselines`` and ``nerfvc batch`` run)."""
    from nerfvc.eval.cited import cited_points
    from nerfvc.eval.metrics import DISTS_FRAMES
    from nerfvc.eval.report import build_report

    codecs = [c for c in args.codecs.split(",") if c]
    bad = [c for c in codecs if c not in B.CODECS]
    if bad:
        raise InputError(f"unknown codec(s) {', '.join(bad)}; choose from {', '.join(B.CODECS)}")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        floor_sizes = [int(s) for s in args.floor_sizes.split(",") if s]
    except ValueError as e:
        raise InputError(f"bad size list: {e}") from None
    if not sizes:
        raise InputError("--sizes needs at least one size")
    sweeps = {c: B.CODECS[c].sweep[: args.points] for c in codecs} if args.points else None
    dists_frames = args.dists_frames
    t0 = time.time()
    gt_src, prev_src, info = load_test_split(args.video)

    def say(msg: str) -> None:
        print(f"{time.time() - t0:6.0f}s {msg}", file=sys.stderr, flush=True)

    keeper = VideoKeeper(args.out, float(info.get("fps") or 25.0)) if args.keep_videos else None
    model = args.model
    nerfvc_info: dict = {}
    if model:
        gt_src, prev_src, points, receiver, nerfvc_info = _nerfvc_points(args, gt_src, prev_src, info, say)
    runs = {}
    for s in sizes:
        run = run_size(
            gt_src,
            prev_src,
            s,
            codecs=codecs,
            sweeps=sweeps,
            face=not args.no_face,
            dists_frames=dists_frames,
            progress=say,
            keep_video=keeper.add if keeper else None,
        )
        if keeper:
            keeper.reference(run.gt)
        if model:
            _score_nerfvc(run, receiver, points, not args.no_face, dists_frames, nerfvc_info, say, keeper)
        runs[s] = run
    resolution: dict[int, dict[str, list]] = {s: r.systems for s, r in runs.items()}
    floors = {str(s): r.floors for s, r in runs.items()}
    for s in floor_sizes:
        fl = floors_only(gt_src, s, codecs)
        floors[str(s)] = fl
        resolution[s] = {c: [RDPoint(v["kbps"], v, None, f"floor q {v['q']}")] for c, v in fl.items()}
        say(f"[{s}] floors: " + ", ".join(f"{c} {v['kbps']:.1f} kbps" for c, v in fl.items()))
    main = runs[max(sizes)]
    cited = cited_points()
    files = build_report(
        Path(args.out),
        main.gt,
        {**main.systems, **cited},
        resolution=resolution,
        title=f"{'nerfvc vs baselines' if model else 'Baselines'} on {Path(args.video).name} "
        f"(test frames {info['test_frames']}, {main.size}²"
        f"{', ground truth upscaled' if main.size > min(gt_src.shape[1:3]) else ''})",
        notes=[
            *upscale_notes(gt_src.shape[1:3], [*sizes, *floor_sizes]),
            "Bitrate = elementary-stream bytes × 8 / duration; low-delay, one I-frame, CRF/QP sweeps.",
            "Codec floors (coarsest quantiser) are reported as measured, never extrapolated.",
            f"DISTS is the mean over {DISTS_FRAMES if dists_frames is None else dists_frames} evenly spaced "
            "frames of each sequence (VGG16 is too slow on a CPU to score every frame).",
            "FOMM and Bi-layer are the seed paper's own numbers (HDTF, its resolution; bitrate derived from "
            "its PSNR/b.r. ratio), not measured here.",
        ],
        cited=sorted(cited),
        extra={
            "floors": floors,
            "video": str(args.video),
            "test_frames": info["test_frames"],
            "model": str(model) if model else None,
            "nerfvc": nerfvc_info,
            **({"videos": keeper.index()} if keeper else {}),
        },
    )
    say(f"wrote {files['html']}")
    return files


def _nerfvc_points(args, gt_src, prev_src, info, say):
    """Track the test frames with the model, code them at each target rate, load the renderer."""
    from nerfvc.eval.pipeline import code_rate_points, track_frames
    from nerfvc.pipeline import ReceiverPipeline, SenderPipeline

    targets = rate_list(args.kbps, "--kbps", allow_empty=True)
    if args.max_frames:
        gt_src = gt_src[: args.max_frames]
    sender = SenderPipeline.from_model_dir(args.model)
    receiver = ReceiverPipeline.from_model_dir(args.model, references=not args.no_references)
    receiver.renderer()  # loaded now, so that a broken model fails before tracking
    fps = float(info.get("fps") or 25.0)
    frames, clip = track_frames(sender, np.concatenate([prev_src[None], gt_src]), fps)
    if warning := clip.warning():
        say(f"warning: {warning}")
    refine_s = refine_pose_s = 0.0
    if args.refine_pose:
        from nerfvc.pipeline.pose_refine import PoseRefineConfig

        t = time.perf_counter()
        pose_config = PoseRefineConfig(iterations=args.refine_pose)
        clip = sender.refine_clip(clip, renderer=receiver.renderer(), pose=pose_config)
        refine_pose_s = (time.perf_counter() - t) / len(clip.pose)
        say(f"refined the head poses ({args.refine_pose} steps, {refine_pose_s:.2f} s/frame)")
    if args.refine:
        from nerfvc.pipeline.refine import RefineConfig

        t = time.perf_counter()
        clip = sender.refine_clip(clip, RefineConfig(iterations=args.refine), receiver.renderer())
        refine_s = (time.perf_counter() - t) / len(clip.pose)
        say(f"refined the expressions ({args.refine} iterations, {refine_s:.2f} s/frame)")
    prev_src, gt_src, expr, pose = frames[0], frames[1:], clip.features[1:], clip.pose[1:]
    if not 1 <= args.frames_per_packet <= 8:
        raise InputError("--frames-per-packet must be 1..8")
    camera = gt_src if args.frame_step_by == "render" else None
    points = code_rate_points(sender, receiver, expr, pose, fps, targets, args.frames_per_packet, camera)
    for p in points:
        say(f"nerfvc {p.label}: {p.kbps:.3f} kbps, {p.bits_per_frame:.1f} bits/frame, step {p.frame_step}")
    nerfvc_info = {
        "fps": fps,
        "frames": len(gt_src),
        "rates": [
            {"label": p.label, "kbps": p.kbps, "bits_per_frame": p.bits_per_frame, "frame_step": p.frame_step}
            for p in points
        ],
        "frame_step_by": args.frame_step_by,
        "render_ms": {},
        "refine": {"iterations": args.refine, "s_per_frame": refine_s},
        "refine_pose": {"iterations": args.refine_pose, "s_per_frame": refine_pose_s},
    }
    return gt_src, prev_src, points, receiver, nerfvc_info


def _score_nerfvc(run, receiver, points, face, dists_frames, nerfvc_info, say, keeper) -> None:
    """Render each decoded rate point at the run's size and score it against the run's reference (and keep
    it as a video when ``keeper`` is set)."""
    from nerfvc.eval.pipeline import render_sequence

    for p in points:
        t = time.perf_counter()
        frames = render_sequence(receiver, p.expression, p.pose, run.size)
        ms = (time.perf_counter() - t) / len(frames) * 1000
        nerfvc_info["render_ms"][str(run.size)] = ms
        res = evaluate(run.ref, frames, bitrate_kbps=p.kbps, face=face, dists_frames=dists_frames)
        if keeper:
            keeper.add("nerfvc", p.label, p.kbps, frames)
        run.systems.setdefault("nerfvc", []).append(
            RDPoint.from_eval(res, p.kbps, frames=frames, label=p.label)
        )
        s = res["summary"]
        say(f"[{run.size}] nerfvc {p.label}: kbps={p.kbps:.3g}, psnr={s['psnr']:.4g}, {ms:.0f} ms/frame")
        _score_guarded(run, receiver, p, frames, face, dists_frames, nerfvc_info, say)


def _score_guarded(run, receiver, p, frames, face, dists_frames, nerfvc_info, say) -> None:
    """The same rate point with the sender's quality guard and fallback pictures (docs/guard.md) as
    ``nerfvc+guard``: its rate includes every fallback bit; ``fallback_share`` = frames in fallback."""
    from nerfvc.guard.sequence import guarded_frames

    shown, g = guarded_frames(receiver, run.gt, p.expression, p.pose, frames, nerfvc_info["fps"])
    kbps = p.kbps + g["fallback_kbps"]
    res = evaluate(run.ref, shown, bitrate_kbps=kbps, face=face, dists_frames=dists_frames)
    res["summary"]["fallback_share"] = g["fallback_share"]
    run.systems["nerfvc"][-1].metrics["fallback_share"] = 0.0
    run.systems.setdefault("nerfvc+guard", []).append(
        RDPoint.from_eval(res, kbps, frames=shown, label=p.label)
    )
    nerfvc_info.setdefault("guard", {}).setdefault(str(run.size), []).append({"label": p.label, **g})
    say(
        f"[{run.size}] nerfvc+guard {p.label}: kbps={kbps:.3g}, psnr={res['summary']['psnr']:.4g}, "
        f"{100 * g['fallback_share']:.0f}% of frames in fallback, {g['pictures']} pictures"
    )
