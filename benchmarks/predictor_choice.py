"""Which predictor the codec fit chooses per dataset and what each choice costs (results/predictor_choice.*).

For each DATASET: codec tables fitted on the training split (as ``nerfvc train`` fits them, the torso shift
included when the dataset has one) with the automatic choice and with each intra option forced, and the
ideal bits per frame they spend on the held-out split at Q = 1 … 16 (step indices 0 … 64). No rendering:
the indices are the same for every choice at a given Q, only the bits differ.

    PYTHONPATH=. .venv/bin/python benchmarks/predictor_choice.py work/datasets/german work/datasets/d9 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerfvc.codec import fit_codec
from nerfvc.codec.coder import frame_bits
from nerfvc.datasetdir import MANIFEST, dataset_split, read_features, read_manifest
from nerfvc.face.model import load_face_model
from nerfvc.features import model_input
from nerfvc.record import machine_record

INDICES = (0, 16, 32, 48, 64)


def choices(root: Path) -> list[dict]:
    """Rows for one dataset: the automatic choice, then each intra option forced."""
    manifest = read_manifest(root)
    feats = read_features(root, manifest)
    (a, b), (c, d) = dataset_split(manifest)
    torso = feats.get("torso")
    dims = torso.shape[1] if torso is not None and np.abs(torso).max() > 0 else 0
    x = model_input(feats["expression"], torso[:, :dims] if torso is not None and dims else None, dims)
    valid = feats["valid"].astype(bool) if "valid" in feats else np.ones(len(x), bool)
    face = load_face_model(root)
    rows = []
    fits: dict[str, dict[str, Any]] = {
        "auto": {},
        "none": {"intra": False},
        "pose": {"intra": "pose"},
        "all": {"intra": True},
    }
    for label, kw in fits.items():
        t = fit_codec(x[a:b], feats["pose"][a:b], valid[a:b], face_model=face, **kw)
        vec = t.features_to_vec(x[c:d], feats["pose"][c:d])
        bits = {str(s): round(float(frame_bits(t, vec, s).mean()), 2) for s in INDICES}
        rows.append(
            {"dataset": root.name, "torso_dims": dims, "fit": label, "predictor": t.predictor,
             "intra": t.info["intra"], "order": t.info["order"], "bits_per_frame": bits}
        )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/predictor_choice"))
    args = ap.parse_args()
    for root in args.datasets:
        if not (root / MANIFEST).is_file():
            ap.error(f"{root}: not a prepared dataset (no manifest.json; run `nerfvc prepare` first)")
    rows = [r for root in args.datasets for r in choices(root)]
    record: dict[str, Any] = {"machine": machine_record(), "indices": INDICES, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    head = "| dataset | torso dims | fit | chosen (predictor, intra, order) | " + " | ".join(
        f"Q = {2 ** (s // 16)}" for s in INDICES
    )
    lines = [head + " |", "|---|---|---|---|" + "---|" * len(INDICES)]
    for r in rows:
        bits = " | ".join(f"{r['bits_per_frame'][str(s)]:.1f}" for s in INDICES)
        chosen = f"{r['predictor']}, {r['intra']}, {r['order']}"
        lines.append(f"| {r['dataset']} | {r['torso_dims']} | {r['fit']} | {chosen} | {bits} |")
    m = record["machine"]
    flags = ", ".join(k for k, v in m["isa"].items() if v)
    text = (
        "# Codec predictor choice: held-out bits per frame at each Q\n\n"
        f"Machine: {m['cpu_model']} ({flags}); commit {m['commit']}, {m['date']}.\n"
        "Command: `PYTHONPATH=. .venv/bin/python benchmarks/predictor_choice.py DATASET...`\n\n"
        + "\n".join(lines)
        + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
