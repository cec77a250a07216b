"""CLI: ``nerfvc embed-train DATASET -o MODEL``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the embedding subcommand."""
    p = sub.add_parser(
        "embed-train",
        help="train the expression embedding (landmark distortion + λ·rate) and fit the codec on its codes",
    )
    p.add_argument("dataset", help="DATASET directory (features.npz, face model, manifest split)")
    p.add_argument("-o", "--output", required=True, help="MODEL directory (embed.safetensors, codec.json)")
    p.add_argument("--code-dim", type=int, default=30, help="transmitted code dimensions (default 30)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.0, help="rate weight in px² per bit")
    p.add_argument("--minutes", type=float, default=1.0, help="training time budget")
    p.add_argument("--window", type=int, default=4, help="causal window in frames (current included)")
    p.add_argument("--step", type=float, default=1.0, help="codec step multiplier Q simulated in training")
    p.set_defaults(func=cmd_embed_train)


def cmd_embed_train(args: argparse.Namespace) -> int:
    from nerfvc.codec.tables import index_from_step
    from nerfvc.embed.train import embed_train_dir
    from nerfvc.errors import InputError

    if not 1 <= args.code_dim <= 4096 or args.window < 1 or args.minutes <= 0 or args.lam < 0:
        raise InputError("need --code-dim >= 1, --window >= 1, --minutes > 0, --lambda >= 0")
    info = embed_train_dir(
        args.dataset,
        args.output,
        code_dim=args.code_dim,
        lam=args.lam,
        minutes=args.minutes,
        window=args.window,
        step_index=index_from_step(args.step),
    )
    f = info["final"]
    print(
        f"{args.output}: embedding {args.code_dim}-d trained {info['iterations']} iters in "
        f"{info['train_seconds']} s (train: {f['px2'] ** 0.5:.3f} px rms with quantization noise, "
        f"~{f['bits']:.1f} code bits/frame); model fingerprint {info['fingerprint']}"
    )
    return 0
