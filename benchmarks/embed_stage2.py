"""Stage-2 ablation (through the NeRF) → benchmarks/results/embed_stage2.json.

Given a trained NeRF MODEL dir for a dataset: copies it, then for raw 79-d / stage-1 embedding / stage-1 +
stage-2 fine-tuned embedding, codes the test split at one step (real streams, keyframes every 2 s), decodes,
and renders the test frames with the decoded expression and pose → PSNR/SSIM vs the ground-truth frames,
next to bits/frame and landmark px error. Also renders the uncoded raw features (the NeRF's own ceiling).

    PYTHONPATH=. nice -n 5 .venv/bin/python benchmarks/embed_stage2.py MODEL DATASET [--size 64]
        [--lam 0.01] [--stage1-iters 500] [--stage2-minutes 3] [--frames 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bitrate import errors, timed_roundtrip

from nerfvc.codec import fit_codec
from nerfvc.embed.encoder import EmbedConfig
from nerfvc.embed.finetune import FinetuneConfig, finetune_through_renderer, render_metrics
from nerfvc.embed.train import (
    TrainConfig,
    encode_expressions,
    expansion_matrix,
    fit_code_tables,
    landmark_tau,
    load_dataset_geometry,
    save_embedding,
    train_embedding,
)
from nerfvc.modeldir import finalize_model_dir
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from nerfvc.record import machine_record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dataset")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--stage1-iters", type=int, default=500)
    ap.add_argument("--stage2-minutes", type=float, default=3.0)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--step-index", type=int, default=0)
    ap.add_argument("--work", default="/tmp/embed_stage2")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "embed_stage2.json"))
    args = ap.parse_args()
    ds = load_dataset_geometry(args.dataset)
    tr, te = slice(*ds.train), slice(*ds.test)
    face, cam, fps = ds.face_model, ds.camera, ds.fps
    keyint = round(2 * fps)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    m = work / "model"
    shutil.copytree(args.model, m, ignore=shutil.ignore_patterns(".train"))
    frames = np.arange(*ds.test)[np.linspace(0, ds.test[1] - ds.test[0] - 1, args.frames).astype(int)]
    raw = fit_codec(ds.expression[tr], ds.pose[tr], ds.valid[tr], face_model=face)
    tau = landmark_tau(face, raw)
    res = {"dataset": args.dataset, "size": args.size, "step_index": args.step_index, "variants": {}}

    def code_and_score(name, tables, code, decode) -> None:
        dc, dp, bits, _, _ = timed_roundtrip(tables, code[te], ds.pose[te], fps, keyint, args.step_index)
        expr = ds.expression.copy()
        pose = ds.pose.copy()
        expr[te], pose[te] = decode(dc), dp
        t0 = time.perf_counter()
        r = render_metrics(m, args.dataset, {name: expr}, pose, frames, args.size)[name]
        r.update(
            {
                "bits_per_frame": float(bits.sum() / len(dc)),
                "landmark_px_rms": errors(ds.expression[te], ds.pose[te], expr[te], pose[te], face, cam)[
                    "landmark_px_rms"
                ],
                "render_s": round(time.perf_counter() - t0, 1),
            }
        )
        res["variants"][name] = r
        print(name, r, flush=True)

    def code_and_score_model(name: str) -> None:
        """``code_and_score`` through the MODEL's own sender and receiver (its tables and embedding)."""
        sender, receiver = SenderPipeline.from_model_dir(m), ReceiverPipeline.from_model_dir(m)
        code = sender.to_code(ds.expression)  # whole clip: the test frames see their history
        code_and_score(name, sender.codec.tables, code, receiver.to_expression)

    res["variants"]["uncoded_raw79"] = render_metrics(
        m, args.dataset, {"u": ds.expression}, ds.pose, frames, args.size
    )["u"]
    print("uncoded", res["variants"]["uncoded_raw79"], flush=True)
    code_and_score("raw79", raw, ds.expression, lambda x: x)
    ec = EmbedConfig(in_dim=ds.expression.shape[1], code_dim=30)
    emb = train_embedding(
        ds.expression[tr], ds.pose[tr], ds.valid[tr], face, cam, ec,
        TrainConfig(lam=args.lam, minutes=30, max_iters=args.stage1_iters), tau,
    )  # fmt: skip
    code = encode_expressions(emb, ds.expression)
    tables = fit_code_tables(code[tr], ds.pose[tr], ds.valid[tr], face, expansion_matrix(emb), tau)
    tables.save(m / "codec.json")
    save_embedding(emb, m, {"stage": 1, "lambda": args.lam})
    finalize_model_dir(m)
    code_and_score_model(f"stage1_lambda{args.lam:g}")
    info = finetune_through_renderer(
        m, args.dataset, FinetuneConfig(lam=args.lam, minutes=args.stage2_minutes), size=args.size
    )
    code_and_score_model(f"stage2_lambda{args.lam:g}")
    res["stage2"] = info
    res["machine"] = machine_record()
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
