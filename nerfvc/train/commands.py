"""``nerfvc train DATASET -o MODEL``: fit the portrait NeRF, write MODEL, score held-out frames."""

from __future__ import annotations

import argparse
import json

from nerfvc.render.model import ModelConfig
from nerfvc.train.trainer import TrainConfig, train


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the receiver NeRF on a prepared dataset")
    p.add_argument("dataset", help="DATASET directory written by `nerfvc prepare`")
    p.add_argument(
        "-o", "--output", required=True, help="MODEL directory (rerun to resume from its checkpoint)"
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for the training loop")
    p.add_argument("--iters", type=int, default=None, help="iteration cap (default 100000)")
    p.add_argument(
        "--size", default=None, help="train at this size: S (longer side) or WxH (default: dataset)"
    )
    p.add_argument("--batch-rays", type=int, default=4096)
    p.add_argument("--eval-frames", type=int, default=25, help="held-out frames scored at the end (-1 = all)")
    p.add_argument("--no-consistency", action="store_true", help="ablation: no head-torso consistency code")
    p.add_argument(
        "--no-torso",
        action="store_true",
        help="ignore the dataset's torso shifts (the torso follows the head pose only, as in the paper)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        batch_rays=args.batch_rays,
        eval_frames=args.eval_frames,
        seed=args.seed,
        minutes=args.minutes,
        torso_motion=not args.no_torso,
    )
    if args.iters is not None:
        cfg.iters = args.iters
    mcfg = ModelConfig(consistency_dim=0 if args.no_consistency else 8)
    result = train(args.dataset, args.output, cfg, mcfg, size=args.size)
    print(
        json.dumps(
            {
                "model": args.output,
                "fingerprint": result.fingerprint,
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "test": result.metrics,
            },
            indent=2,
        )
    )
    return 0
