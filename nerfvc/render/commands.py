"""``nerfvc render MODEL --features F.npz --size S -o OUT.mp4``: video of any size from features."""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from nerfvc.features import load_features, model_inputs
from nerfvc.io.video import write_video
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
        default=None,
        help="coarse,fine samples per ray (default: as trained, 24,24; 16,16 is faster)",
    )
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    feats = load_features(args.features)
    n = len(feats["pose"]) if args.frames is None else min(args.frames, len(feats["pose"]))
    render_video(
        args.model, model_inputs(feats, args.model)[:n], feats["pose"][:n], args.size, args.fps, args.output
    )
    return 0


def render_video(
    model: str, expression: np.ndarray, pose: np.ndarray, size: str, fps: float, output: str
) -> None:
    """Render ``expression (N,E)``, ``pose (N,12)`` with the MODEL at ``size`` (S or WxH) into an mp4."""
    renderer = Renderer.from_model_dir(model)
    w, h = parse_size(size, renderer.camera.width, renderer.camera.height)
    times: list[float] = []

    def frames():
        for i in tqdm(range(len(pose)), desc=f"render {w}x{h}", dynamic_ncols=True):
            t = time.perf_counter()
            img = renderer.render(expression[i], pose[i], w, h)
            times.append(time.perf_counter() - t)
            yield img

    count = write_video(output, frames(), fps)
    print(f"wrote {count} frames {w}x{h} to {output} ({1000 * float(np.median(times)):.0f} ms/frame)")
