"""nerfvc on every shared clip: prepare → train (a fixed budget) → eval at 256² beside x265/x264/VVenC/SVT-AV1
and freeze, with a one-row-per-clip summary. Resumable: rerun the same command after a kill.

    PYTHONPATH=. .venv/bin/python benchmarks/clips.py [--clips german,d9] [--minutes 20] [--work work/bench] \
        [--size 256] [--kbps 1.5] [--codecs x265,x264,vvenc,svtav1] [--max-frames 0] [--refine N] \
        [--ray auto|ADDRESS] [--cpus-per-task 1] [--train "RECIPE OPTIONS"] [-o benchmarks/results/clips]

``--clips`` takes clip names or unique substrings of them (default: every mp4 in ../shared/data/clips).
This is ``nerfvc batch`` (``nerfvc.batch``) over the shared clips: datasets, models and reports are cached
under ``--work`` (``WORK/<clip>/``), each step's output goes to ``WORK/<clip>/<step>.log`` and progress to
``WORK/bench.log``. The summary is ``-o``.json and ``-o``.md, rewritten after each step. See
benchmarks/README.md for the time it takes.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from nerfvc.batch import BatchConfig, parse_train_options, run_batch
from nerfvc.batch_commands import report
from nerfvc.errors import NerfvcError
from nerfvc.eval.options import EvalOptions

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / ".." / "shared" / "data" / "clips"


def select(names: str, available: list[Path]) -> list[Path]:
    """Clips matching each comma-separated name (exact stem, else a unique substring)."""
    if not names:
        return available
    out = []
    for name in [n for n in names.split(",") if n]:
        exact = [v for v in available if v.stem == name]
        hits = exact or [v for v in available if name in v.stem]
        if len(hits) != 1:
            sys.exit(
                f"--clips {name}: matches {len(hits)} clips ({', '.join(v.stem for v in hits) or 'none'})"
            )
        out.append(hits[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="", help="comma-separated clip names or substrings (default: all)")
    ap.add_argument("--clips-dir", default=str(CLIPS))
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per clip (default 20)")
    ap.add_argument("--work", default="work/bench", help="cache of datasets, models, reports, logs")
    ap.add_argument("--size", type=int, default=256, help="eval frame size (default 256)")
    ap.add_argument("--kbps", default="1.5", help="nerfvc target rates (default 1.5)")
    ap.add_argument("--codecs", default="x265,x264,vvenc,svtav1")
    ap.add_argument("--max-frames", type=int, default=0, help="score only the first N test frames (0: all)")
    ap.add_argument("--dists-frames", type=int, default=8)
    ap.add_argument(
        "--refine",
        type=int,
        default=0,
        help="the sender's expression refinement in eval, L-BFGS iterations per frame (0: off)",
    )
    ap.add_argument(
        "--frame-step-by",
        choices=["render", "rule"],
        default="render",
        help="how eval's sender picks the frame step at each rate (nerfvc eval --frame-step-by)",
    )
    ap.add_argument(
        "--refine-pose",
        type=int,
        default=EvalOptions.refine_pose,
        help="the sender's head-pose refinement in eval, steps per frame (nerfvc eval --refine-pose; 0: off)",
    )
    ap.add_argument(
        "--step-timeout",
        type=float,
        default=120.0,
        help="minutes before a step is stopped (train: on top of --minutes)",
    )
    ap.add_argument("--train", default="", help="`nerfvc train` recipe options for every clip, quoted")
    ap.add_argument("--retry-failed", action="store_true", help="rerun clips that failed before")
    ap.add_argument("--ray", default=None, help="'auto' (a local Ray) or a cluster ADDRESS (default: no Ray)")
    ap.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per Ray task (default 1)")
    ap.add_argument("-o", "--out", default="benchmarks/results/clips", help="summary path without suffix")
    args = ap.parse_args()
    videos = select(args.clips, sorted(Path(args.clips_dir).glob("*.mp4")))
    if not videos:
        sys.exit(f"no clips in {args.clips_dir}")
    cfg = BatchConfig(
        work=Path(args.work),
        minutes=args.minutes,
        size=args.size,
        kbps=args.kbps,
        codecs=args.codecs,
        max_frames=args.max_frames,
        dists_frames=args.dists_frames,
        refine=args.refine,
        frame_step_by=args.frame_step_by,
        refine_pose=args.refine_pose,
        step_timeout_minutes=args.step_timeout,
        train=args.train,
        retry_failed=args.retry_failed,
        cpus_per_task=args.cpus_per_task,
    )
    command = "python benchmarks/clips.py " + shlex.join(sys.argv[1:])
    try:
        parse_train_options(cfg.train)  # a bad recipe is an error before anything runs
    except NerfvcError as e:
        sys.exit(f"clips.py: error: {e}")
    # `kill PID` stops the running step like Ctrl-C: training checkpoints on the way out
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        summary = run_batch(
            cfg,
            videos,
            Path(args.out),
            ray=args.ray,
            command=command,
            title="nerfvc on the shared clips",
            log=Path(args.work) / "bench.log",
        )
    except NerfvcError as e:
        sys.exit(f"clips.py: error: {e}")
    except KeyboardInterrupt:
        print("clips.py: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    return report(summary)


if __name__ == "__main__":
    raise SystemExit(main())
