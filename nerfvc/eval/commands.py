"""``nerfvc eval MODEL VIDEO -o REPORT`` and ``nerfvc eval-baselines VIDEO -o REPORT``.

Both score a clip's test split (its last 20%) against classic codecs, freeze-frame and next-frame baselines
and write the same report; ``eval`` adds nerfvc itself (track → encode → decode → render) at several rates.
"""

from __future__ import annotations

import argparse

from nerfvc.argtypes import int_in
from nerfvc.configargs import ConfigArgs, Opt
from nerfvc.eval.options import EvalOptions

# The options of both commands; their defaults and help come from EvalOptions (nerfvc.configargs).
OPTIONS = ConfigArgs(
    EvalOptions,
    Opt("sizes", metavar="S,.."),
    Opt("floor_sizes", metavar="S,.."),
    Opt("codecs", metavar="C,.."),
    Opt("points", type=int_in(0), metavar="N"),
    "no_face",
    Opt("dists_frames", type=int_in(0), metavar="N"),
    Opt(
        "keep_videos",
        help="also keep the ground truth and every codec (and nerfvc) rate point at each size as lossless "
        "videos in REPORT/videos/ (the input of `nerfvc mos build`; ~1.3 MB per second of video at 256², "
        "4× that at 512²)",
    ),
    # nerfvc eval only
    Opt("kbps", metavar="K,.."),
    Opt("max_frames", type=int_in(0), metavar="N"),
    Opt("frames_per_packet", type=int_in(1), metavar="N"),
    Opt("refine", type=int_in(0), metavar="N"),
    Opt("refine_pose", type=int_in(0), metavar="N"),
    Opt("frame_step_by", choices=("render", "rule")),
    "no_references",
)
COMMON = ("sizes", "floor_sizes", "codecs", "points", "no_face", "dists_frames", "keep_videos")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval-baselines`` and ``eval`` subcommands."""
    p = sub.add_parser(
        "eval-baselines", help="score classic codecs on a clip's test split and write a report"
    )
    p.add_argument("video", help="clip; its last 20%% of frames are the test split")
    p.add_argument("-o", "--out", required=True, help="report directory")
    OPTIONS.add_to(p, *COMMON)
    p.set_defaults(func=run)

    p = sub.add_parser(
        "eval",
        help="score nerfvc (track → encode → decode → render) against the baselines on a clip's test split",
    )
    p.add_argument("model", help="MODEL directory written by `nerfvc train`")
    p.add_argument("video", help="clip of the same person; its last 20%% of frames are scored")
    p.add_argument("-o", "--out", required=True, help="report directory")
    OPTIONS.add_to(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``nerfvc eval`` / ``nerfvc eval-baselines`` with the parsed ``args``."""
    from nerfvc.eval.run import run_eval

    run_eval(OPTIONS.build(args, video=args.video, out=args.out, model=getattr(args, "model", None)))
    return 0
