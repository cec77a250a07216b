"""CLI subcommands ``prepare`` and ``inspect``."""

from __future__ import annotations

import argparse

from nerfvc.configargs import ConfigArgs, Opt
from nerfvc.face.prepare import PrepareParams, prepare

# `nerfvc prepare`'s options; their defaults and help come from PrepareParams (nerfvc.configargs), their
# ranges are checked by `prepare` (one-line InputError).
PREPARE_OPTIONS = ConfigArgs(
    PrepareParams,
    Opt("max_frames", metavar="N"),
    Opt("start", metavar="SECONDS"),
    Opt("size", metavar="S"),
    Opt("crop", choices=("auto", "none")),
    Opt("expr_dims", metavar="N"),
    Opt("fov_deg", "--fov", metavar="DEG"),
    Opt("smoothing"),
)


def _prepare(args: argparse.Namespace) -> int:
    p = PREPARE_OPTIONS.build(args, source=args.video)
    out = prepare(
        args.video,
        args.output,
        max_frames=p.max_frames,
        start=p.start,
        size=p.size,
        crop=p.crop,
        expr_dims=p.expr_dims,
        fov_deg=p.fov_deg,
        smoothing=p.smoothing,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(out)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from nerfvc.face.inspect import contact_sheet

    print(contact_sheet(args.dataset, args.output, rows=args.rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``inspect`` to the ``nerfvc`` CLI."""
    p = subparsers.add_parser(
        "prepare", help="video → training DATASET (frames, masks, features, face model)"
    )
    p.add_argument("video", help="input video (any container PyAV reads)")
    p.add_argument("-o", "--output", required=True, help="DATASET directory (resumed if it exists)")
    PREPARE_OPTIONS.add_to(p)
    p.add_argument("--overwrite", action="store_true", help="delete an existing DATASET first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    q = subparsers.add_parser("inspect", help="contact sheet PNG of a DATASET")
    q.add_argument("dataset", help="DATASET directory")
    q.add_argument("-o", "--output", required=True, help="output PNG")
    q.add_argument("--rows", type=int, default=5, help="number of sampled frames")
    q.set_defaults(func=_inspect)
