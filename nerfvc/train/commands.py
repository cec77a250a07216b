"""``nerfvc train DATASET -o MODEL``: fit the portrait NeRF, write MODEL, score held-out frames.

The options and their defaults come from :class:`TrainConfig` and :class:`ModelConfig`
(:mod:`nerfvc.configargs`); only ``--size`` (an argument of :func:`train`) is written here.
"""

from __future__ import annotations

import argparse
import json

from nerfvc.argtypes import int_in, non_negative, number_in, positive
from nerfvc.configargs import ConfigArgs, Opt
from nerfvc.render.model import ModelConfig
from nerfvc.train.trainer import TrainConfig, train

TRAIN_OPTIONS = ConfigArgs(
    TrainConfig,
    Opt("minutes", type=positive, metavar="M"),
    Opt("iters", type=int_in(1), metavar="N"),
    Opt("batch_rays", type=int_in(1), metavar="N"),
    Opt("eval_frames", type=int_in(-1), metavar="N"),
    Opt(
        "torso_motion",
        "--no-torso",
        help="ignore the dataset's torso shifts (the torso follows the head pose only, as in the paper)",
    ),
    Opt("seed", metavar="N"),
    Opt("perceptual_weight", type=non_negative, metavar="W"),
    Opt("error_frac", type=number_in(0, 1), metavar="F"),
)
MODEL_OPTIONS = ConfigArgs(
    ModelConfig,
    Opt("consistency_dim", type=int_in(0, 4096), metavar="N"),
    Opt("consistency_dim", "--no-consistency", const=0, help="ablation: --consistency-dim 0"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the receiver NeRF on a prepared dataset")
    p.add_argument("dataset", help="DATASET directory written by `nerfvc prepare`")
    p.add_argument(
        "-o", "--output", required=True, help="MODEL directory (rerun to resume from its checkpoint)"
    )
    p.add_argument(
        "--size", default=None, help="train at this size: S (longer side) or WxH (default: the dataset's)"
    )
    TRAIN_OPTIONS.add_to(p)
    MODEL_OPTIONS.add_to(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = TRAIN_OPTIONS.build(args)
    mcfg = MODEL_OPTIONS.build(args)
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
