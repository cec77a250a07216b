"""``nerfvc train DATASET -o MODEL``: fit the portrait NeRF, write MODEL, score held-out frames.

The options and their defaults come from :class:`TrainConfig` and :class:`ModelConfig`
(:mod:`nerfvc.train.recipe`); only ``--size`` (an argument of :func:`train`) is written here.
"""

from __future__ import annotations

import argparse
import json

from nerfvc.train.recipe import MODEL_OPTIONS, TRAIN_OPTIONS, add_recipe_options, recipe
from nerfvc.train.trainer import train

__all__ = ["MODEL_OPTIONS", "TRAIN_OPTIONS", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the receiver NeRF on a prepared dataset")
    p.add_argument("dataset", help="DATASET directory written by `nerfvc prepare`")
    p.add_argument(
        "-o", "--output", required=True, help="MODEL directory (rerun to resume from its checkpoint)"
    )
    p.add_argument(
        "--size", default=None, help="train at this size: S (longer side) or WxH (default: the dataset's)"
    )
    add_recipe_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg, mcfg = recipe(args)
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
