"""``nerfvc render MODEL --features F.npz --size S -o OUT.mp4``: video of any size from features."""

from __future__ import annotations

import argparse

from nerfvc.argtypes import int_in
from nerfvc.features import load_features, model_inputs
from nerfvc.render.renderer import Renderer
from nerfvc.train.dataset import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a video from a trained MODEL and per-frame features")
    p.add_argument("model", help="MODEL directory written by `nerfvc train`")
    p.add_argument("--features", required=True, help="features .npz (expression (N,E), pose (N,12))")
    p.add_argument("--size", default="512", help="S (longer side, aspect kept) or WxH (exact); default 512")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--frames", type=int, default=None, help="render only the first N frames")
    p.add_argument(
        "--samples",
        type=sample_counts,
        default=None,
        metavar="C,F",
        help="coarse,fine samples per head ray (default: the frame renderer's, the trained coarse count and "
        "at most 12 fine; as trained, e.g. 24,24, is slower and closer to the training renderer)",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="render the NeRF alone, without the model's reference frames' texture",
    )
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.set_defaults(func=run)


def sample_counts(text: str) -> tuple[int, int]:
    """``"24,12"`` → (24, 12): coarse and fine samples per head ray, each 2…256."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected COARSE,FINE, two integers in 2..256, got {text!r}")
    count = int_in(2, 256)
    return count(parts[0]), count(parts[1])


def run(args: argparse.Namespace) -> int:
    feats = load_features(args.features)
    n = len(feats["pose"]) if args.frames is None else min(args.frames, len(feats["pose"]))
    expression = model_inputs(feats, args.model)[:n]
    renderer = Renderer.from_model_dir(args.model, samples=args.samples, references=not args.no_references)
    w, h = parse_size(args.size, renderer.camera.width, renderer.camera.height)
    print(renderer.write_video(args.output, expression, feats["pose"][:n], w, h, args.fps))
    return 0
