"""Winks (issue 16): which expression components carry them, whether the codec keeps them, whether the model
draws them, with and without drawing the eye regions by halves (``nerfvc.render.halves``).

    PYTHONPATH=. .venv/bin/python benchmarks/wink.py --work work/bench36 [--model model_10min] \
        [--kbps 1,2,4] [--sizes 256,512] [-o benchmarks/results/wink]

For every ``WORK/<clip>/{dataset,MODEL}``: the training frames' blinks (how far they close, how the two
eyes' apertures correlate), the eye-aperture asymmetry (``EyeApertures.asymmetry``, the left eye's aperture
minus the right's in mean apertures) of every tracked frame and of every frame as the receiver decodes it at
each rate (no frame of a clip should wink). None of the shared clips holds a wink, so one is made from the
clip's deepest blink: its closed-eye landmarks around the subject's left eye over those of the nearest frame
with open eyes, projected onto the face model. For that wink: its asymmetry as tracked, with the face model
cut to its first 16 / 32 components, and as decoded when it is held for half a second inside the clip and
coded at each rate, by the plain quantizer and by the sender's (which keeps a wink: ``nerfvc.codec.wink``);
then rendered at the open frame's pose, with and without halves, and tracked again by the sender's face
tracker (what a viewer sees: the re-tracked asymmetry; a wink is about -1, both eyes alike 0); and end to
end, the wink as decoded at the first rate, rendered with halves at each size and re-tracked. Writes
``OUTPUT.json`` and ``OUTPUT.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nerfvc.codec.roundtrip import coded_features
from nerfvc.codec.tables import load_model_tables
from nerfvc.datasetdir import dataset_split, read_features, read_manifest
from nerfvc.face.eyes import APERTURE_ASYMMETRY
from nerfvc.face.model import FaceModel
from nerfvc.face.tracker import FaceTracker
from nerfvc.features import model_inputs
from nerfvc.fsutil import write_bytes_atomic, write_json_atomic
from nerfvc.record import machine_record
from nerfvc.render.halves import FaceHalves
from nerfvc.render.renderer import Renderer

ROOT = Path(__file__).resolve().parents[1]
WINK_FRAMES = 12  # a wink held for half a second at 25 fps


def synthetic_wink(face: FaceModel, halves: FaceHalves, expression: np.ndarray, train: np.ndarray) -> dict:
    """The clip's deepest training blink made a wink of the subject's left eye → its code and frames."""
    ap = halves.eyes.openings(expression[train]).mean(1)
    closed = int(train[np.argmin(ap)])
    opens = train[ap >= np.median(ap)]
    open_ = int(opens[np.argmin(np.abs(opens - closed))])
    d_open = (face.shape(expression[open_]) - face.mean).reshape(-1, 3)
    d_closed = (face.shape(expression[closed]) - face.mean).reshape(-1, 3)
    wink = d_open + halves.region["left"][:, None] * (d_closed - d_open)
    return {"code": wink.reshape(-1) @ face.basis, "closed": closed, "open": open_}


def retracked_asymmetry(model: Path, halves: FaceHalves, image: np.ndarray) -> float | None:
    """The eye asymmetry the sender's tracker reads from ``image`` (None: no face found); a fresh tracker
    each time (the face mesh tracks from the image before, so a reused one depends on what it saw last)."""
    with FaceTracker.from_dir(model, smoothing=False) as tracker:
        f = tracker.track(image)
    return float(halves.eyes.asymmetry(f.expression[None])[0]) if f.ok else None


def clip_row(work: Path, clip: str, model_name: str, sizes: list[int], kbps: list[float]) -> dict:
    """Everything above for one clip."""
    ds, model = work / clip / "dataset", work / clip / model_name
    manifest = read_manifest(ds)
    feats = read_features(ds, manifest)
    face = FaceModel.load(model)
    halves = FaceHalves.from_shape(face.mean, face.basis)
    e = face.expr_dims
    inputs = model_inputs(feats, model).astype(np.float32)  # (N,E+T)
    pose = feats["pose"].astype(np.float32)
    valid = feats["valid"].astype(bool) if "valid" in feats else np.ones(len(pose), bool)
    n_train = dataset_split(manifest)[0][1]
    train = np.flatnonzero(valid[:n_train])
    expression = inputs[:, :e].astype(np.float64)
    ap = halves.eyes.openings(expression[train])
    asym = halves.eyes.asymmetry(expression[valid])
    row: dict = {
        "clip": clip,
        "blink_depth": round(float(1 - ap.mean(1).min() / np.median(ap.mean(1))), 3),
        "eyes_correlation": round(float(np.corrcoef(ap[:, 0], ap[:, 1])[0, 1]), 3),
        "tracked_max_asymmetry": round(float(np.abs(asym).max()), 3),
        "tracked_frames_by_halves": int((np.abs(asym) > halves.eyes.threshold).sum()),
    }
    wink = synthetic_wink(face, halves, expression, train)
    code = wink["code"]
    row["wink_frames"] = [wink["closed"], wink["open"]]
    row["wink_asymmetry"] = round(float(halves.eyes.asymmetry(code[None])[0]), 3)
    for k in (16, 32):
        cut = code.copy()
        cut[k:] = 0
        row[f"wink_asymmetry_first_{k}"] = round(float(halves.eyes.asymmetry(cut[None])[0]), 3)
    tables, _ = load_model_tables(model)
    fps = float(manifest.get("fps") or 25.0)
    held = inputs.copy()
    held[wink["open"] : wink["open"] + WINK_FRAMES, :e] = code  # the wink held inside the clip, then coded
    at = slice(wink["open"], min(wink["open"] + WINK_FRAMES, len(held)))
    sent = {}  # rate → the decoded held wink (kept)
    for rate in kbps:
        decoded, _ = coded_features(tables, inputs, pose, rate, fps, eyes=halves.eyes)
        a = halves.eyes.asymmetry(decoded[:, :e][valid])
        row[f"decoded_{rate:g}kbps_max_asymmetry"] = round(float(np.abs(a).max()), 3)
        row[f"decoded_{rate:g}kbps_frames_by_halves"] = int((np.abs(a) > halves.eyes.threshold).sum())
        for label, eyes in (("plain", None), ("kept", halves.eyes)):
            decoded, _ = coded_features(tables, held, pose, rate, fps, eyes=eyes)
            a = halves.eyes.asymmetry(decoded[at, :e])
            row[f"wink_decoded_{rate:g}kbps_{label}_asymmetry"] = round(float(a.mean()), 3)
        sent[rate] = decoded[at][len(decoded[at]) // 2]
    renderer = Renderer.from_model_dir(model)
    x = inputs[wink["open"]].copy()
    x[:e] = code
    p = pose[wink["open"]]
    for size in sizes:
        for label, mirror in (("plain", None), ("halves", renderer.halves)):
            r_halves, renderer.halves = renderer.halves, mirror
            img = renderer.render(x, p, size, size)
            renderer.halves = r_halves
            a = retracked_asymmetry(model, halves, img)
            row[f"render_{size}_{label}_retracked_asymmetry"] = None if a is None else round(a, 3)
        open_img = renderer.render(inputs[wink["open"]], p, size, size)
        a = retracked_asymmetry(model, halves, open_img)
        row[f"render_{size}_open_retracked_asymmetry"] = None if a is None else round(a, 3)
        a = retracked_asymmetry(model, halves, renderer.render(sent[kbps[0]], p, size, size))
        row[f"end_to_end_{size}_retracked_asymmetry"] = None if a is None else round(a, 3)
    return row


def markdown(rows: list[dict], kbps: list[float], sizes: list[int], command: str, machine: dict) -> str:
    """The results as a Markdown page."""
    lines = [
        "# Winks: the expression code, the codec and the renderer (issue 16)",
        "",
        f"Command: `{command}`. Machine: {machine.get('cpu_model')}, {machine.get('cores')} cores.",
        "",
        "Asymmetry = the subject's left eye's aperture minus the right's, in mean apertures of the person's"
        " mean shape (a wink of the left eye ≈ −1; the renderer draws the eye regions by halves above"
        f" {APERTURE_ASYMMETRY:g} in magnitude). The wink is made from each clip's deepest training blink"
        " (*blink depth*: how far it closes). *plain*: the codec's plain quantizer; *kept*: the sender's,"
        " which keeps a wink (`nerfvc.codec.wink`). *End to end*: the kept wink as decoded at the first rate,"
        " rendered with halves and re-tracked.",
        "",
        "| clip | blink depth | eyes corr. | max \\|asym.\\| tracked | "
        + " | ".join(f"max \\|asym.\\| {r:g} kbps" for r in kbps)
        + " | wink asym. | first 16 | first 32 | "
        + " | ".join(f"wink at {r:g} kbps: plain / kept" for r in kbps)
        + " | "
        + " | ".join(f"re-tracked {s}²: open / plain / halves" for s in sizes)
        + " | "
        + " | ".join(f"end to end {kbps[0]:g} kbps, {s}²" for s in sizes)
        + " |",
        "|" + "---|" * (8 + 2 * len(kbps) + 2 * len(sizes)),
    ]
    for r in rows:
        cells = [
            r["clip"],
            r["blink_depth"],
            r["eyes_correlation"],
            r["tracked_max_asymmetry"],
            *(r[f"decoded_{k:g}kbps_max_asymmetry"] for k in kbps),
            r["wink_asymmetry"],
            r["wink_asymmetry_first_16"],
            r["wink_asymmetry_first_32"],
            *(
                " / ".join(str(r[f"wink_decoded_{k:g}kbps_{v}_asymmetry"]) for v in ("plain", "kept"))
                for k in kbps
            ),
            *(
                " / ".join(str(r[f"render_{s}_{v}_retracked_asymmetry"]) for v in ("open", "plain", "halves"))
                for s in sizes
            ),
            *(r[f"end_to_end_{s}_retracked_asymmetry"] for s in sizes),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    frames = sum(r["tracked_frames_by_halves"] for r in rows)
    decoded = sum(r[f"decoded_{k:g}kbps_frames_by_halves"] for r in rows for k in kbps)
    lines += ["", f"Frames of the clips drawn by halves: {frames} tracked, {decoded} decoded (all rates)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="directory of <clip>/{dataset,MODEL}")
    ap.add_argument("--model", default="model_10min", help="MODEL directory name inside each clip")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--kbps", default="1,2,4")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "wink")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kbps = [float(k) for k in args.kbps.split(",")]
    clips = sorted(p.parent.parent.name for p in args.work.glob(f"*/{args.model}/model.json"))
    if not clips:
        raise SystemExit(f"{args.work}: no <clip>/{args.model} model directories")
    rows = []
    for clip in clips:
        rows.append(clip_row(args.work, clip, args.model, sizes, kbps))
        print(rows[-1], flush=True)
    machine = machine_record()
    output = args.output.resolve()
    shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
    command = (
        f"python benchmarks/wink.py --work {args.work} --model {args.model} --sizes {args.sizes} "
        f"--kbps {args.kbps} -o {shown}"
    )
    out = {"benchmark": "winks", "command": command, "machine": machine, "kbps": kbps, "clips": rows}
    write_json_atomic(args.output.with_suffix(".json"), out)
    write_bytes_atomic(args.output.with_suffix(".md"), markdown(rows, kbps, sizes, command, machine).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
