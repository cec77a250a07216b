"""Classic-codec baselines on a clip's test split (last 20%): RD points, floors, freeze-frame, next-frame.

    PYTHONPATH=. .venv/bin/python benchmarks/baselines.py \
        [--video ../shared/data/clips/mimictalk_german_anchor_20s.mp4] [--sizes 256,512] \
        [--floor-sizes 128,1024] [-o benchmarks/results/baselines.json] [--summarize]

Writes the JSON after every row, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from nerfvc.eval import baselines as B
from nerfvc.eval.metrics import evaluate, prepare_reference
from nerfvc.eval.run import load_test_split
from nerfvc.eval.video import resize_frames, to_jsonable
from nerfvc.fsutil import write_json_atomic
from nerfvc.metrics import psnr, ssim
from nerfvc.record import machine_record

KEYS = ("kbps", "psnr", "ssim", "lpips", "dists", "csim", "prmse", "aucon", "lmd")


def markdown(res: dict) -> str:
    """A Markdown summary of baselines.json: every row per size, then the floors."""

    def f(v) -> str:
        return "–" if v is None else (v if isinstance(v, str) else f"{v:.4g}")

    lines = [f"# Baselines on {res['video']} (test frames {res['test_frames']})", ""]
    lines += [f"Command: `{res['command']}`", ""] + [f"- {n}" for n in res["notes"]]
    for size, entry in res["sizes"].items():
        lines += ["", f"## {size}x{size}", "", "| system | q | " + " | ".join(KEYS) + " | au_recall |"]
        lines.append("|---" * (len(KEYS) + 3) + "|")
        for r in entry["rows"]:
            cells = " | ".join(f(r.get(k)) for k in (*KEYS, "au_recall"))
            lines.append(f"| {r['system']} | {f(r.get('q'))} | {cells} |")
    floors: dict[str, dict] = {
        s: {c: v["kbps"] for c, v in e["floors"].items()} for s, e in res["sizes"].items()
    }
    for s, e in res.get("floors_only", {}).items():
        floors[s] = {c: v["kbps"] for c, v in e.items()}
    codecs = sorted({c for v in floors.values() for c in v})
    lines += ["", "## Floors (kbps at the coarsest quantiser; 1024 = upscaled 512 source)", ""]
    lines += ["| size | " + " | ".join(codecs) + " |", "|---" * (len(codecs) + 1) + "|"]
    for s in sorted(floors, key=int):
        lines.append(f"| {s} | " + " | ".join(f(floors[s].get(c)) for c in codecs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default="../shared/data/clips/mimictalk_german_anchor_20s.mp4")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument(
        "--floor-sizes", default="128,1024", help="sizes where only floors are measured (PSNR/SSIM)"
    )
    ap.add_argument("--codecs", default=",".join(B.CODECS))
    ap.add_argument("-o", "--out", default="benchmarks/results/baselines.json")
    ap.add_argument(
        "--summarize", action="store_true", help="only rewrite the .md summary of an existing JSON"
    )
    args = ap.parse_args(argv)
    if args.summarize:
        res = json.loads(Path(args.out).read_text())
        Path(args.out).with_suffix(".md").write_text(markdown(res))
        return 0

    gt_src, prev_src, info = load_test_split(args.video)
    codecs = args.codecs.split(",")
    res: dict = {
        "video": Path(args.video).name,
        "test_frames": info["test_frames"],
        "fps": info["fps"],
        "source_size": [info["width"], info["height"]],
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/baselines.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_record(),
        "settings": {c: {"args": " ".join(B.CODECS[c].args), "sweep": B.CODECS[c].sweep} for c in codecs},
        "notes": [
            "1024 px = bicubic upscale of the 512 px source (no extra detail); smaller sizes: INTER_AREA",
            "bitrate = elementary-stream bytes * 8 / duration (no container)",
            "freeze: first test frame as one x265 intra frame (CRF 23), held; next-frame: GT one frame late",
            "AUCON is 'AUCON (landmark AUs)': mediapipe landmark geometry, not OpenFace",
        ],
        "sizes": {},
    }
    out = Path(args.out)
    t_all = time.time()
    for size in [int(s) for s in args.sizes.split(",") if s]:
        gt = resize_frames(gt_src, size)
        prev = resize_frames(prev_src[None], size)[0]
        t0 = time.time()
        ref = prepare_reference(gt)
        entry: dict = {"rows": [], "floors": {}, "face_bbox": ref.face_bbox}
        res["sizes"][str(size)] = entry
        print(f"[{size}] reference ready in {time.time() - t0:.0f}s", flush=True)

        def add(
            system: str, dec: np.ndarray, kbps: float | None, meta: dict, entry=entry, ref=ref, size=size
        ):
            t = time.time()
            s = evaluate(ref, dec, bitrate_kbps=kbps)["summary"]
            row = {"system": system, **meta, **s}
            entry["rows"].append(row)
            write_json_atomic(out, to_jsonable(res))
            shown = " ".join(f"{k}={row[k]:.4g}" for k in KEYS if row.get(k) is not None)
            print(f"[{size}] {system:8s} q={meta.get('q')} {shown} ({time.time() - t:.0f}s)", flush=True)

        fz = B.freeze_frame(gt)
        add("freeze", fz.frames, fz.kbps, fz.info())
        add("next", B.next_frame(gt, prev), None, {"codec": "next"})
        for c in codecs:
            for q in B.CODECS[c].sweep:
                r = B.encode(gt, c, q)
                add(c, r.frames, r.kbps, r.info())
                if q == B.CODECS[c].q_floor:
                    entry["floors"][c] = {"q": q, "kbps": r.kbps}
    for size in [int(s) for s in args.floor_sizes.split(",") if s]:
        gt = resize_frames(gt_src, size)
        fl = res.setdefault("floors_only", {}).setdefault(str(size), {})
        for c in codecs:
            r = B.floor(gt, c)
            fl[c] = {
                **r.info(),
                "psnr": float(np.mean([psnr(a, b) for a, b in zip(gt, r.frames)])),
                "ssim": float(np.mean([ssim(a, b) for a, b in zip(gt, r.frames)])),
            }
            write_json_atomic(out, to_jsonable(res))
            print(f"[{size}] floor {c} {r.kbps:.2f} kbps ({r.encode_seconds:.0f}s)", flush=True)
    res["seconds"] = round(time.time() - t_all)
    write_json_atomic(out, to_jsonable(res))
    out.with_suffix(".md").write_text(markdown(json.loads(out.read_text())))
    print(f"wrote {out} in {res['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
