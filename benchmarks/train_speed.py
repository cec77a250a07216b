"""Training speed: the default step against a plain-torch float32 step, and held-out quality vs minutes.

    PYTHONPATH=. .venv/bin/python benchmarks/train_speed.py --dataset /work/data/datasets/german
    NERFVC_PRECISION=fp32 PYTHONPATH=. .venv/bin/python benchmarks/train_speed.py ... --label fp32

1. **Step speed** (one process, same batches): steps/s of the default training step (C++ hash grid, MLP
   precision and density kernel chosen per machine, occupancy from the head masks' hull) and of a plain
   step (pure-torch hash grid, float32, no occupancy prior), at 1 and 2 threads; the ratio. The default's
   precision and kernel are those a training run on this machine chose by timing its own steps
   (``trainer.settings_trial``), or float32 with torch kernels before any run has chosen.
2. **Time to quality**: ``nerfvc train --minutes M`` for each of ``--minutes`` (fresh runs), held-out PSNR
   of the trainer's own scoring (25 test frames at 256²), steps and the whole call's wall clock (which
   ``--minutes`` bounds). Resumable: a budget already in the output JSON under this ``--label`` is skipped.

Writes ``benchmarks/results/train_speed.json`` (one entry per ``--label``, each with its machine record).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from nerfvc.field.fields import field_settings
from nerfvc.record import machine_record
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.train.dataset import load_dataset
from nerfvc.train.trainer import (
    RaySampler,
    TrainConfig,
    compute_loss,
    fit_head_box,
    head_hull,
    settings_trial,
    train,
)

ROOT = Path(__file__).resolve().parent


def step_speed(dataset: Path, plain: bool, threads: int, steps: int, size: int | None) -> dict:
    """Median seconds per training step (after 3 warm-up steps) of the default or the plain step."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ds = load_dataset(dataset, size)
    lo, hi, _ = fit_head_box(ds, ds.head_lo, ds.head_hi)
    cfg = ModelConfig(head_lo=lo, head_hi=hi, torso_dims=ds.torso_dims)
    cfg.expression_dim = int(ds.expression.shape[1]) - ds.torso_dims
    if plain:
        for head in (cfg.coarse, cfg.fine):
            head.grid = replace(head.grid, implementation="torch")
    model = PortraitNeRF(cfg)
    train_t = torch.from_numpy(ds.train_idx)
    model.set_normalisation(ds.expression[train_t], ds.pose[train_t])
    if not plain and (hull := head_hull(ds, lo, hi, cfg.occupancy_res)) is not None:
        model.occupancy.set_prior(hull)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    sampler = RaySampler(ds, 0.7)
    tcfg = TrainConfig()
    trial, candidates = settings_trial(model, tcfg)  # the default: as remembered by a real run, else fp32
    settings = (torch.float32, "torch") if plain else candidates[trial.current]
    times = []
    with field_settings(*settings):
        for i in range(steps + 3):
            torch.manual_seed(i)
            batch = sampler.sample(tcfg.batch_rays)
            t = time.perf_counter()
            b = batch
            out = model.render_rays(
                b["dirs"], b["uv"], b["expression"], b["pose"], b["background"], train=True
            )
            loss, _ = compute_loss(out, batch, tcfg)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if i >= 3:
                times.append(time.perf_counter() - t)
    s = sorted(times)[len(times) // 2]
    return {
        "seconds_per_step": round(s, 4),
        "steps_per_s": round(1 / s, 2),
        "steps_timed": len(times),
        "settings": [str(settings[0]).removeprefix("torch."), settings[1]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("/work/data/datasets/german"))
    ap.add_argument("--minutes", default="2,5,10", help="training budgets for time-to-quality ('' = none)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per step-speed setting")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--size", default=None, help="training size (default: the dataset's)")
    ap.add_argument("--label", default=os.environ.get("NERFVC_PRECISION", "auto"))
    ap.add_argument("--work", type=Path, default=Path("work/train_speed"))
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "train_speed.json")
    args = ap.parse_args()
    out = json.loads(args.output.read_text()) if args.output.exists() else {}
    entry = out.setdefault(args.label, {})
    entry["machine"] = machine_record()
    entry["dataset"] = str(args.dataset)

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=2) + "\n")

    speed = entry.setdefault("step_speed", {})
    for threads in (int(t) for t in args.threads.split(",") if t):
        row = {
            name: step_speed(args.dataset, name == "plain_torch_fp32", threads, args.steps, args.size)
            for name in ("default", "plain_torch_fp32")
        }
        row["ratio"] = round(row["default"]["steps_per_s"] / row["plain_torch_fp32"]["steps_per_s"], 2)
        speed[f"{threads}_threads"] = row
        print(threads, json.dumps(row), flush=True)
        save()
    quality = entry.setdefault("time_to_quality", {})
    for minutes in (float(m) for m in args.minutes.split(",") if m):
        key = f"{minutes:g}_min"
        if key in quality:
            continue
        model_dir = args.work / f"{args.label}_{key}"
        shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run: the budget shapes the schedule
        t = time.perf_counter()
        r = train(args.dataset, model_dir, TrainConfig(minutes=minutes, progress=False), size=args.size)
        quality[key] = {
            "steps": r.steps,
            "loop_seconds": round(r.seconds, 1),
            "call_seconds": round(time.perf_counter() - t, 1),
            "heldout": r.metrics,
        }
        print(key, json.dumps(quality[key]), flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
