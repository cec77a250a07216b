"""``nerfvc eval MODEL VIDEO -o REPORT`` and ``nerfvc eval-baselines VIDEO -o REPORT``.

Both score a clip's test split (its last 20%) against classic codecs, freeze-frame and next-frame baselines
and write the same report; ``eval`` adds nerfvc itself (track → encode → decode → render) at several rates.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from nerfvc.eval import baselines as B
from nerfvc.eval.options import EvalOptions


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
        "--kbps",
        default=EvalOptions.kbps,
        help=f"nerfvc target rates (comma-separated, default {EvalOptions.kbps})",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=EvalOptions.max_frames,
        help="score only the first N test frames (0: all)",
    )
    p.add_argument(
        "--frames-per-packet",
        type=int,
        default=EvalOptions.frames_per_packet,
        help="frames sharing one packet's framing (default 1, as in a live call; `nerfvc encode` uses 4 "
        "for files)",
    )
    p.set_defaults(func=run)


def _common_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``eval-baselines``."""
    p.add_argument("-o", "--out", required=True, help="report directory")
    p.add_argument(
        "--sizes",
        default=EvalOptions.sizes,
        help=f"sizes scored with every metric (default {EvalOptions.sizes})",
    )
    p.add_argument(
        "--floor-sizes",
        default=EvalOptions.floor_sizes,
        help="sizes where only codec floors are measured, e.g. 128,1024",
    )
    p.add_argument(
        "--codecs", default=EvalOptions.codecs, help="comma-separated subset of " + ",".join(B.CODECS)
    )
    p.add_argument(
        "--points",
        type=int,
        default=EvalOptions.points,
        help="use only the first N points of each sweep (0: all)",
    )
    p.add_argument("--no-face", action="store_true", help="skip the face metrics (CSIM, PRMSE, AUCON, LMD)")
    p.add_argument(
        "--dists-frames",
        type=int,
        default=EvalOptions.dists_frames,
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
    """Run ``nerfvc eval`` / ``nerfvc eval-baselines`` with the parsed ``args``."""
    from nerfvc.eval.run import run_eval

    names = [f.name for f in fields(EvalOptions)]
    run_eval(EvalOptions(**{k: getattr(args, k) for k in names if hasattr(args, k)}))
    return 0
