"""Enrollment coverage of the shared clips (``nerfvc.face.coverage``) and how it relates to held-out quality.

    PYTHONPATH=. .venv/bin/python benchmarks/coverage.py --datasets work/bench-batch/sequential \
        [--quality benchmarks/results/clips.json] [-o benchmarks/results/coverage.json]

For every prepared clip (``DATASETS/<clip>/dataset``): the training split's spread of each expression proxy
and pose angle, the share of test frames outside the training range, and what is missing. ``typical`` is the
median spread over the clips (``nerfvc.face.coverage.TYPICAL`` is set from it). With ``--quality`` (a
``nerfvc batch`` summary, e.g. ``benchmarks/clips.py``'s), the Pearson and Spearman correlations over clips
between the test frames outside the training range and nerfvc's held-out PSNR, LPIPS, CSIM and its PSNR
margin over the frozen frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from nerfvc.datasetdir import dataset_split, read_features, read_manifest
from nerfvc.face.coverage import coverage
from nerfvc.fsutil import read_json, write_json_atomic
from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=Path, required=True, help="directory of <clip>/dataset")
    ap.add_argument("--quality", type=Path, default=ROOT / "benchmarks" / "results" / "clips.json")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "coverage.json")
    args = ap.parse_args()
    clips: dict[str, dict] = {}
    for ds in sorted(args.datasets.glob("*/dataset")):
        manifest = read_manifest(ds)
        feats = read_features(ds, manifest)
        (_, n_train), _ = dataset_split(manifest)
        clips[ds.parent.name] = coverage(feats["landmarks"], feats["pose"], n_train, feats.get("valid"))
    if not clips:
        raise SystemExit(f"{args.datasets}: no <clip>/dataset directories")
    names = next(iter(clips.values()))["measures"].keys()
    typical = {
        k: round(float(np.median([c["measures"][k]["spread"] for c in clips.values()])), 3) for k in names
    }
    out: dict = {
        "benchmark": "enrollment coverage",
        "machine": machine_record(),
        "typical": typical,
        "clips": clips,
    }
    if args.quality.is_file():
        rows = {r["clip"]: r for r in read_json(args.quality)["clips"] if r.get("status") == "ok"}
        common = [c for c in clips if c in rows]
        x = [clips[c]["test_frames_outside"] for c in common]
        quality = {
            "psnr": [rows[c]["nerfvc"]["psnr"] for c in common],
            "lpips": [rows[c]["nerfvc"]["lpips"] for c in common],
            "csim": [rows[c]["nerfvc"]["csim"] for c in common],
            "psnr_over_freeze": [rows[c]["nerfvc"]["psnr"] - rows[c]["freeze"]["psnr"] for c in common],
        }
        out["quality_source"] = str(args.quality)
        out["correlation_with_test_frames_outside"] = {
            k: {
                "pearson": round(float(pearsonr(x, v)[0]), 3),
                "spearman": round(float(spearmanr(x, v)[0]), 3),
                "clips": len(common),
            }
            for k, v in quality.items()
        } if len(common) >= 3 else None  # fmt: skip
    write_json_atomic(args.output, out)
    for name, c in clips.items():
        print(
            name, f"test outside {c['test_frames_outside']:.2f}", "missing:", "; ".join(c["missing"]) or "-"
        )
    print(json.dumps({"typical": typical, "correlation": out.get("correlation_with_test_frames_outside")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
