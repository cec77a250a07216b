"""``nerfvc eval MODEL VIDEO -o REPORT`` and ``nerfvc eval-baselines VIDEO -o REPORT``.

Both score a clip's test split (its last 20%) against classic codecs, freeze-frame and next-frame baselines
and write the same report; ``eval`` adds nerfvc itself (track → encode → decode → render) at several rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nerfvc.errors import InputError
from nerfvc.eval import baselines as B


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval-baselines`` and ``eval`` subcommands."""
    p = sub.add_parser(
        "eval-baselines", help="score classic codecs on a clip's test split and write a report"
    )
    p.add_argument("video", help="clip; its last 20%% of frames are the test split")
    _common_args(p)
    p.set_defaults(func=run)

    p = sub.add_parser(
        "eval",
        help="score nerfvc (track → encode → decode → render) against the baselines on a clip's test split",
    )
    p.add_argument("model", help="MODEL directory written by `nerfvc train`")
    p.add_argument("video", help="clip of the same person; its last 20%% of frames are scored")
    _common_args(p)
    p.add_argument(
        "--kbps", default="0.8,1.5,3", help="nerfvc target rates (comma-separated, default 0.8,1.5,3)"
    )
    p.add_argument("--max-frames", type=int, default=0, help="score only the first N test frames (0: all)")
    p.add_argument(
        "--frames-per-packet",
        type=int,
        default=1,
        help="frames sharing one packet's framing (default 1, as in a live call; `nerfvc encode` uses 4 "
        "for files)",
    )
    p.set_defaults(func=run)


def _common_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``eval-baselines``."""
    p.add_argument("-o", "--out", required=True, help="report directory")
    p.add_argument("--sizes", default="256,512", help="sizes scored with every metric (default 256,512)")
    p.add_argument(
        "--floor-sizes", default="", help="sizes where only codec floors are measured, e.g. 128,1024"
    )
    p.add_argument(
        "--codecs", default=",".join(B.CODECS), help="comma-separated subset of " + ",".join(B.CODECS)
    )
    p.add_argument("--points", type=int, default=0, help="use only the first N points of each sweep (0: all)")
    p.add_argument("--no-face", action="store_true", help="skip the face metrics (CSIM, PRMSE, AUCON, LMD)")
    p.add_argument(
        "--dists-frames",
        type=int,
        default=None,
        help="score DISTS on this many evenly spaced frames per rate point (default 8; 0: no DISTS). "
        "DISTS costs ~1 s per 256² frame on one core",
    )
    p.add_argument(
        "--keep-videos",
        action="store_true",
        help="also keep the ground truth and every codec (and nerfvc) rate point at each size as lossless "
        "videos in REPORT/videos/ (the input of `nerfvc mos build`; ~1.3 MB per second of video at 256², "
        "4× that at 512²)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the baselines (and nerfvc, when ``args.model`` is set) and write the report into ``args.out``."""
    from nerfvc.eval.cited import cited_points
    from nerfvc.eval.metrics import DISTS_FRAMES
    from nerfvc.eval.report import RDPoint, build_report
    from nerfvc.eval.run import floors_only, load_test_split, run_size, upscale_notes
    from nerfvc.eval.video import VideoKeeper

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
    model = getattr(args, "model", None)
    nerfvc_info: dict = {}
    if model:
        gt_src, prev_src, points, renderer, nerfvc_info = _nerfvc_points(args, gt_src, prev_src, info, say)
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
            _score_nerfvc(run, renderer, points, not args.no_face, dists_frames, nerfvc_info, say, keeper)
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
    return 0


def _nerfvc_points(args, gt_src, prev_src, info, say):
    """Track the test frames with the model, code them at each target rate, load the renderer."""
    import numpy as np

    from nerfvc.eval.pipeline import code_rate_points, track_frames
    from nerfvc.render.renderer import Renderer

    try:
        targets = [float(k) for k in args.kbps.split(",") if k]
    except ValueError as e:
        raise InputError(f"bad --kbps list: {e}") from None
    if args.max_frames:
        gt_src = gt_src[: args.max_frames]
    renderer = Renderer.from_model_dir(args.model)
    fps = float(info.get("fps") or 25.0)
    frames, expr, pose = track_frames(args.model, np.concatenate([prev_src[None], gt_src]), fps)
    prev_src, gt_src, expr, pose = frames[0], frames[1:], expr[1:], pose[1:]
    if not 1 <= args.frames_per_packet <= 8:
        raise InputError("--frames-per-packet must be 1..8")
    points = code_rate_points(args.model, expr, pose, fps, targets, args.frames_per_packet)
    for p in points:
        say(f"nerfvc {p.label}: {p.kbps:.3f} kbps, {p.bits_per_frame:.1f} bits/frame")
    nerfvc_info = {
        "fps": fps,
        "frames": len(gt_src),
        "rates": [{"label": p.label, "kbps": p.kbps, "bits_per_frame": p.bits_per_frame} for p in points],
        "render_ms": {},
    }
    return gt_src, prev_src, points, renderer, nerfvc_info


def _score_nerfvc(run, renderer, points, face, dists_frames, nerfvc_info, say, keeper) -> None:
    """Render each decoded rate point at the run's size and score it against the run's reference (and keep
    it as a video when ``keeper`` is set)."""
    from nerfvc.eval.metrics import evaluate
    from nerfvc.eval.pipeline import render_sequence
    from nerfvc.eval.report import RDPoint

    for p in points:
        t = time.perf_counter()
        frames = render_sequence(renderer, p.expression, p.pose, run.size)
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
