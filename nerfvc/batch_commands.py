"""``nerfvc batch VIDEO... --work DIR``: prepare → train → eval for many clips, in-process or on Ray."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from pathlib import Path

from nerfvc.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = sub.add_parser(
        "batch",
        help="prepare, train and evaluate many clips (resumable; in-process, or Ray tasks with --ray)",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="clips, one person each (names must differ)")
    p.add_argument(
        "--work", required=True, metavar="DIR", help="outputs in DIR/<clip>/ (shared FS on a cluster)"
    )
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per clip (default 20)")
    p.add_argument(
        "--eval",
        default="",
        metavar="OPTIONS",
        help="`nerfvc eval` options for every clip, quoted: --sizes S --kbps K --codecs C --max-frames N "
        "--dists-frames N (default: --sizes 256 --kbps 1.5, all codecs, all test frames, 8 DISTS frames)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="run the steps as Ray tasks: 'auto' starts a local Ray, ADDRESS (host:port or ray://…) joins a "
        "cluster (needs `pip install nerfvc[cluster]`)",
    )
    p.add_argument(
        "--cpus-per-task", type=int, default=1, help="CPUs (and torch threads) per Ray task (default 1)"
    )
    p.add_argument(
        "--step-timeout",
        type=float,
        default=120.0,
        help="minutes before a step is stopped and counted as failed (train: on top of --minutes)",
    )
    p.add_argument("--retry-failed", action="store_true", help="rerun clips that failed in an earlier run")
    p.add_argument("-o", "--out", default=None, help="summary path without suffix (default DIR/summary)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch; exit code 1 when any clip failed (the summary is written either way)."""
    from nerfvc.batch import BatchConfig, parse_eval_options, run_batch

    if args.minutes <= 0 or args.cpus_per_task < 1 or args.step_timeout <= 0:
        raise InputError("--minutes, --cpus-per-task and --step-timeout must be positive")
    cfg = BatchConfig(
        work=Path(args.work),
        minutes=args.minutes,
        step_timeout_minutes=args.step_timeout,
        retry_failed=args.retry_failed,
        cpus_per_task=args.cpus_per_task,
    )
    cfg = dataclasses.replace(cfg, **parse_eval_options(args.eval))
    out = Path(args.out) if args.out else cfg.work / "summary"
    command = "nerfvc batch " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["batch"] else sys.argv[1:])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill`: like Ctrl-C, training checkpoints
    summary = run_batch(cfg, args.videos, out, ray=args.ray, command=command, log=cfg.work / "batch.log")
    return report(summary)


def report(summary: dict) -> int:
    """Print the one-line outcome; 1 when any clip failed or is unfinished, else 0."""
    from nerfvc.batch import failed_clips

    bad = failed_clips(summary)
    n = len(summary["clips"])
    print(f"{n - len(bad)}/{n} clips ok" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0
