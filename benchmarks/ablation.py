"""Ablations, paper style (seed paper Table 3): the same clip trained with and without the head-torso
consistency code, and with and without the torso-motion input, for the same number of steps, then scored by
``nerfvc eval`` on the held-out frames with the seven metrics (L1, PSNR, SSIM, LPIPS, CSIM, AUCON, PRMSE); and
the embedding ablation ("Ours" vs "Ours (f.t.)": raw 79-d expression vs 30-d code vs rate-aware code) from
``benchmarks/results/embed.json`` (bits per frame at the tracker-jitter criterion, measured by
``benchmarks/embed.py``).

    PYTHONPATH=. .venv/bin/python benchmarks/ablation.py [--clips german,obama,may] [--iters 1000] \
        [--datasets work/bench-batch/sequential] [--work work/ablation] [-o benchmarks/results/ablation]

Datasets come from ``--datasets/<clip>/dataset`` (a ``nerfvc batch`` work directory) when prepared there,
else are prepared into ``--work``. Every step is cached (rerun to resume). Writes ``-o``.json and ``-o``.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from clips import CLIPS, select

from nerfvc.batch import dataset_done, model_done
from nerfvc.fsutil import read_json, write_bytes_atomic, write_json_atomic
from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parents[1]
METRICS = {
    "l1": ("L1", False),
    "psnr": ("PSNR", True),
    "ssim": ("SSIM", True),
    "lpips": ("LPIPS", False),
    "csim": ("CSIM", True),
    "aucon": ("AUCON", True),
    "prmse": ("PRMSE (°)", False),
}
# name: extra `nerfvc train` options
VARIANTS = {
    "full": [],
    "no_consistency": ["--no-consistency"],
    "no_torso_motion": ["--no-torso"],
}


def nerfvc(*args: str, log: Path) -> None:
    """Run ``nerfvc ARGS`` with its output appended to ``log``; raise on failure."""
    with open(log, "a") as f:
        f.write(f"$ nerfvc {' '.join(args)}\n")
        f.flush()
        code = "from nerfvc.cli import main; raise SystemExit(main())"
        p = subprocess.run([sys.executable, "-c", code, *args], stdout=f, stderr=f, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"nerfvc {args[0]} failed (exit {p.returncode}); see {log}")


def point(results: dict, system: str) -> dict:
    """The lowest-rate point of ``system`` in an eval ``results.json``."""
    pts = results["systems"][system]
    return min(pts, key=lambda p: p["kbps"] if p["kbps"] is not None else 0.0)


def run_clip(video: Path, args: argparse.Namespace) -> dict:
    """Prepare (or reuse), train every variant for ``args.iters`` steps, eval each → {variant: metrics}."""
    clip = video.stem
    work = args.work / clip
    work.mkdir(parents=True, exist_ok=True)
    log = work / "ablation.log"
    dataset = args.datasets / clip / "dataset" if args.datasets else None
    if dataset is None or not dataset_done(dataset):
        dataset = work / "dataset"
        if not dataset_done(dataset):
            nerfvc("prepare", str(video), "-o", str(dataset), log=log)
    rows: dict = {}
    for name, extra in VARIANTS.items():
        model, report = work / f"model_{name}", work / f"report_{name}"
        t = time.perf_counter()
        if not model_done(model):
            nerfvc("train", str(dataset), "-o", str(model), "--iters", str(args.iters), "--eval-frames", "0",
                   *extra, log=log)  # fmt: skip
        train_s = time.perf_counter() - t
        if not (report / "results.json").is_file():
            nerfvc("eval", str(model), str(video), "-o", str(report), "--sizes", str(args.size), "--codecs",
                   "x265", "--points", "1", "--kbps", args.kbps, "--max-frames", str(args.max_frames),
                   "--dists-frames", "0", log=log)  # fmt: skip
        res = read_json(report / "results.json")
        rows[name] = {
            "nerfvc": point(res, "nerfvc"),
            "freeze": point(res, "freeze"),
            "steps": read_json(model / "nerf.json")["trained"]["steps"],
            "train_seconds_this_run": round(train_s, 1),
        }
    return rows


def embedding_rows() -> dict:
    """The embedding ablation measured by benchmarks/embed.py: bits/frame below the tracker's jitter."""
    path = ROOT / "benchmarks" / "results" / "embed.json"
    if not path.is_file():
        return {}
    emb = read_json(path)
    out = {}
    for clip, d in emb.get("summary", {}).items():
        out[clip] = {
            name: {k: v for k, v in row.items() if k.startswith("bits_below_1x") or k == "unquantized_px"}
            for name, row in d["variants"].items()
        }
    machine = emb.get("machine")
    date = machine.get("date") if isinstance(machine, dict) else None  # older results recorded no date
    return {"source": str(path.relative_to(ROOT)), "date": date or "an earlier session", "clips": out}


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        "# Ablations (seed paper Table 3 style)",
        "",
        f"Each clip trained {cfg['iters']} steps per variant (same seed), scored by `nerfvc eval` at "
        f"{cfg['size']}² on the first {cfg['max_frames']} held-out frames, nerfvc at its lowest rate point "
        f"(target {cfg['kbps']} kbps); the freeze row is the first test frame held. "
        f"Machine: {result['machine']['cpu_model']}.",
        "",
        "| clip | variant | kbps | " + " | ".join(label for label, _ in METRICS.values()) + " |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for clip, rows in result["clips"].items():
        if "error" in rows:
            lines.append(f"| {clip} | error: {rows['error']} |" + " |" * (len(METRICS) + 1))
            continue
        for name, row in [*rows.items(), ("freeze", {"nerfvc": next(iter(rows.values()))["freeze"]})]:
            p = row["nerfvc"]
            cells = [f"{p[k]:.4g}" if isinstance(p.get(k), (int, float)) else "–" for k in METRICS]
            kbps = f"{p['kbps']:.2f}" if p.get("kbps") is not None else "–"
            lines.append(f"| {clip} | {name} | {kbps} | " + " | ".join(cells) + " |")
    emb = result.get("embedding") or {}
    if emb:
        lines += [
            "",
            f"## Embedding (from `{emb['source']}`, measured {emb['date']})",
            "",
            "Bits per frame for a landmark error below the tracker's own jitter (1 and 2 frames per packet):",
            "",
            "| clip | code | bits/frame (1 fpp) | bits/frame (2 fpp) | unquantized landmark error (px) |",
            "|---|---|---|---|---|",
        ]
        for clip, variants in emb["clips"].items():
            for name, v in variants.items():
                lines.append(
                    f"| {clip} | {name} | {v.get('bits_below_1x_jitter_1fpp')} | "
                    f"{v.get('bits_below_1x_jitter_2fpp')} | {v.get('unquantized_px', 0):.3g} |"
                )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="german,obama,may")
    ap.add_argument("--iters", type=int, default=1000, help="training steps per variant")
    ap.add_argument(
        "--datasets", type=Path, default=None, help="a `nerfvc batch` work dir to take datasets from"
    )
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "ablation")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--kbps", default="1.5")
    ap.add_argument("--max-frames", type=int, default=40)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "ablation")
    args = ap.parse_args()
    videos = select(args.clips, sorted(CLIPS.glob("*.mp4")))
    result = {
        "benchmark": "ablation",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "output"},
        "machine": machine_record(),
        "clips": {},
        "embedding": embedding_rows(),
    }
    for video in videos:
        try:
            result["clips"][video.stem] = run_clip(video, args)
        except RuntimeError as e:
            result["clips"][video.stem] = {"error": str(e)}
        write_json_atomic(args.output.with_suffix(".json"), result)
        write_bytes_atomic(args.output.with_suffix(".md"), markdown(result).encode())
        print(json.dumps({video.stem: result["clips"][video.stem]}, default=str)[:2000], flush=True)
    return 0 if all("error" not in r for r in result["clips"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
