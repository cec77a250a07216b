"""``nerfvc guard-fit MODEL DATASET``: add the quality guard's statistics to an existing model."""

from __future__ import annotations

import argparse
import math


def _threshold(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "guard-fit",
        help="add the quality guard's statistics (guard.json/.safetensors) to a trained MODEL",
        description="Fit the guard's feature statistics on the DATASET's training split and add them to "
        "MODEL (its fingerprint changes: streams coded for the old fingerprint no longer decode with it).",
    )
    p.add_argument("model", help="MODEL directory (finished training)")
    p.add_argument("dataset", help="the DATASET the model was trained on")
    p.add_argument(
        "--threshold", type=_threshold, default=None, help="guard score threshold (default: calibrated)"
    )
    p.set_defaults(func=cmd_guard_fit)


def cmd_guard_fit(args: argparse.Namespace) -> int:
    from nerfvc.guard.modelfiles import add_guard_to_model
    from nerfvc.guard.stats import GuardStats

    fp = add_guard_to_model(args.model, args.dataset, args.threshold)
    st = GuardStats.load(args.model)
    scales = ", ".join(f"{k} {v:.3g}" for k, v in st.scale.items())
    print(f"{args.model}: guard fitted on {st.info['train_frames']} training frames ({scales}); "
          f"model fingerprint is now {fp}")  # fmt: skip
    return 0
