"""CLI: ``nerfvc embed-train DATASET -o MODEL``.

The options and their defaults come from :class:`EmbedConfig` and the embedding's :class:`TrainConfig`
(:mod:`nerfvc.configargs`).
"""

from __future__ import annotations

import argparse

from nerfvc.argtypes import int_in, non_negative, positive
from nerfvc.codec.tables import index_from_step, step_from_index
from nerfvc.configargs import ConfigArgs, Opt
from nerfvc.embed.encoder import EmbedConfig
from nerfvc.embed.train import TrainConfig, embed_train_dir

EMBED_OPTIONS = ConfigArgs(
    EmbedConfig,
    Opt("code_dim", type=int_in(1, 4096), metavar="N"),
    Opt("window", type=int_in(1), metavar="N"),
)
TRAIN_OPTIONS = ConfigArgs(
    TrainConfig,
    Opt("lam", "--lambda", type=non_negative, metavar="L"),
    Opt("minutes", type=positive, metavar="M"),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the embedding subcommand."""
    p = sub.add_parser(
        "embed-train",
        help="train the expression embedding (landmark distortion + λ·rate) and fit the codec on its codes",
    )
    p.add_argument("dataset", help="DATASET directory (features.npz, face model, manifest split)")
    p.add_argument("-o", "--output", required=True, help="MODEL directory (embed.safetensors, codec.json)")
    EMBED_OPTIONS.add_to(p)
    TRAIN_OPTIONS.add_to(p)
    q = step_from_index(TrainConfig.step_index)
    p.add_argument(
        "--step",
        type=positive,
        default=q,
        metavar="Q",
        help=f"codec step multiplier Q simulated in training (default {q:g})",
    )
    p.set_defaults(func=cmd_embed_train)


def cmd_embed_train(args: argparse.Namespace) -> int:
    ec = EMBED_OPTIONS.build(args)
    tc = TRAIN_OPTIONS.build(args)
    info = embed_train_dir(
        args.dataset,
        args.output,
        code_dim=ec.code_dim,
        lam=tc.lam,
        minutes=tc.minutes,
        window=ec.window,
        step_index=index_from_step(args.step),
    )
    f = info["final"]
    print(
        f"{args.output}: embedding {ec.code_dim}-d trained {info['iterations']} iters in "
        f"{info['train_seconds']} s (train: {f['px2'] ** 0.5:.3f} px rms with quantization noise, "
        f"~{f['bits']:.1f} code bits/frame); model fingerprint {info['fingerprint']}"
    )
    return 0
