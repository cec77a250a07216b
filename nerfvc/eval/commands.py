"""``nerfvc eval-baselines VIDEO -o REPORT``: classic codecs, freeze and next-frame on a clip's test split,
scored and written as a report (the same report ``nerfvc eval`` will write once nerfvc's points are added)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nerfvc.errors import InputError
from nerfvc.eval import baselines as B


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval-baselines`` subcommand."""
    p = sub.add_parser(
        "eval-baselines", help="score classic codecs on a clip's test split and write a report"
    )
    p.add_argument("video", help="clip; its last 20%% of frames are the test split")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the baselines and write the report into ``args.out``."""
    from nerfvc.eval.report import RDPoint, build_report
    from nerfvc.eval.run import floors_only, load_test_split, run_size

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
    t0 = time.time()
    gt_src, prev_src, info = load_test_split(args.video)

    def say(msg: str) -> None:
        print(f"{time.time() - t0:6.0f}s {msg}", file=sys.stderr, flush=True)

    runs = {
        s: run_size(gt_src, prev_src, s, codecs=codecs, sweeps=sweeps, face=not args.no_face, progress=say)
        for s in sizes
    }
    resolution: dict[int, dict[str, list]] = {s: r.systems for s, r in runs.items()}
    floors = {str(s): r.floors for s, r in runs.items()}
    for s in floor_sizes:
        fl = floors_only(gt_src, s, codecs)
        floors[str(s)] = fl
        resolution[s] = {c: [RDPoint(v["kbps"], v, None, f"floor q {v['q']}")] for c, v in fl.items()}
        say(f"[{s}] floors: " + ", ".join(f"{c} {v['kbps']:.1f} kbps" for c, v in fl.items()))
    main = runs[max(sizes)]
    files = build_report(
        Path(args.out),
        main.gt,
        main.systems,
        resolution=resolution,
        title=f"Baselines on {Path(args.video).name} (test frames {info['test_frames']}, {main.size}²)",
        notes=[
            "1024 px ground truth is a bicubic upscale of the 512 px source: it has no extra detail.",
            "Bitrate = elementary-stream bytes × 8 / duration; low-delay, one I-frame, CRF/QP sweeps.",
            "Codec floors (coarsest quantiser) are reported as measured, never extrapolated.",
        ],
        extra={"floors": floors, "video": str(args.video), "test_frames": info["test_frames"]},
    )
    say(f"wrote {files['html']}")
    return 0
