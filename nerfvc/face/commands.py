"""CLI subcommands ``prepare`` and ``inspect``."""

from __future__ import annotations

import argparse

from nerfvc.face.model import DEFAULT_FOV_DEG


def _prepare(args: argparse.Namespace) -> int:
    from nerfvc.face.prepare import prepare

    out = prepare(
        args.video,
        args.output,
        max_frames=args.max_frames,
        start=args.start,
        size=args.size,
        crop=args.crop,
        expr_dims=args.expr_dims,
        fov_deg=args.fov,
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
    p.add_argument("--max-frames", type=int, default=None, help="use at most N frames")
    p.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    p.add_argument("--size", type=int, default=512, help="longer side of the dataset frames (default 512)")
    p.add_argument("--crop", choices=["auto", "none"], default="auto", help="square crop around the face")
    p.add_argument("--expr-dims", type=int, default=79, help="expression PCA dimensions (default 79)")
    p.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG, help="nominal camera FOV in degrees")
    p.add_argument("--overwrite", action="store_true", help="delete an existing DATASET first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    q = subparsers.add_parser("inspect", help="contact sheet PNG of a DATASET")
    q.add_argument("dataset", help="DATASET directory")
    q.add_argument("-o", "--output", required=True, help="output PNG")
    q.add_argument("--rows", type=int, default=5, help="number of sampled frames")
    q.set_defaults(func=_inspect)
