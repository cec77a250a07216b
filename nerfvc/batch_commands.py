"""``nerfvc batch VIDEO... --work DIR``: prepare → train → eval for many clips, in-process or on Ray."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from pathlib import Path

from nerfvc.argtypes import int_in, positive
from nerfvc.batch import BatchConfig, failed_clips, parse_eval_options, parse_train_options, run_batch
from nerfvc.configargs import ConfigArgs, Opt

OPTIONS = ConfigArgs(
    BatchConfig,
    Opt("work", metavar="DIR"),
    Opt("minutes", type=positive, metavar="M"),
    Opt("cpus_per_task", type=int_in(1), metavar="N"),
    Opt("step_timeout_minutes", "--step-timeout", type=positive, metavar="MINUTES"),
    "retry_failed",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = sub.add_parser(
        "batch",
        help="prepare, train and evaluate many clips (resumable; in-process, or Ray tasks with --ray)",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="clips, one person each (names must differ)")
    d = BatchConfig
    p.add_argument(
        "--eval",
        default="",
        metavar="OPTIONS",
        help="`nerfvc eval` options for every clip, quoted: --sizes S --kbps K --codecs C --max-frames N "
        f"--dists-frames N --refine N --frame-step-by render|rule --refine-pose N (default: --sizes {d.size} "
        f"--kbps {d.kbps} --codecs {d.codecs} --max-frames {d.max_frames} --dists-frames {d.dists_frames} "
        f"--refine {d.refine} --frame-step-by {d.frame_step_by} --refine-pose {d.refine_pose}; with --refine "
        "the reports are "
        "report_TAG_SIZE_refineN)",
    )
    p.add_argument(
        "--train",
        default="",
        metavar="OPTIONS",
        help="`nerfvc train` recipe options for every clip, quoted, e.g. '--fine-hidden 32' (they name the "
        "model and report directories; the datasets are shared)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="run the steps as Ray tasks: 'auto' starts a local Ray, ADDRESS (host:port or ray://…) joins a "
        "cluster (needs `pip install nerfvc[cluster]`)",
    )
    OPTIONS.add_to(p)
    p.add_argument("-o", "--out", default=None, help="summary path without suffix (default DIR/summary)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch; exit code 1 when any clip failed (the summary is written either way)."""
    cfg = OPTIONS.build(args)
    cfg = dataclasses.replace(cfg, train=args.train, **parse_eval_options(args.eval))
    parse_train_options(cfg.train)  # a bad recipe is an error before anything runs
    out = Path(args.out) if args.out else cfg.work / "summary"
    command = "nerfvc batch " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["batch"] else sys.argv[1:])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill`: like Ctrl-C, training checkpoints
    summary = run_batch(cfg, args.videos, out, ray=args.ray, command=command, log=cfg.work / "batch.log")
    return report(summary)


def report(summary: dict) -> int:
    """Print the one-line outcome; 1 when any clip failed or is unfinished, else 0."""
    bad = failed_clips(summary)
    n = len(summary["clips"])
    print(f"{n - len(bad)}/{n} clips ok" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0
