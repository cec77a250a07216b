"""Two training recipes on the shared clips, side by side, from the reports `benchmarks/clips.py` left under
``--work`` (the same budget, datasets and eval; ``--a`` and ``--b`` are the recipes' ``--train`` options,
"" = the default recipe) → ``-o``.json and ``-o``.md. With ``--work-b``, B's reports come from that work
directory instead (e.g. the same recipe on datasets prepared another way, or the same models evaluated by
another sender).

    python benchmarks/recipe_ab.py --work work/bench10 --minutes 10 --size 256 --b "--blend-res 31" \\
        -o benchmarks/results/ab_10min_blend-res-31_256

Per clip and rate point: each metric under A and B, which of them beat the frozen first frame, and the
training steps each recipe took in the budget; then per metric the mean change and on how many clips B is
better. Only clips with both reports are compared; the others are listed. Per clip, both models' PSNR on
25 training and 25 held-out frames rendered from their tracked features at ``--size``
(:func:`nerfvc.train.trainer.generalisation_scores`, cached in the clip's work directory): the
generalisation gap.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from targets import ISSUE16, clip_rows, metric_change_table, metric_changes, write_results

from nerfvc.batch import run_tag
from nerfvc.fsutil import read_json, write_json_atomic


def train_cpu_seconds(work: Path, clip: str, minutes: float, train: str) -> float | None:
    """CPU seconds the recipe's training took on ``clip`` (the batch's ``cpu_times.json``): with the wall
    budget fixed, this shows how many cores it had (other jobs, threads)."""
    path = work / clip / "cpu_times.json"
    return read_json(path).get(f"model_{run_tag(minutes, train)}") if path.is_file() else None


def generalisation(work: Path, clip: str, minutes: float, train: str, size: int) -> dict | None:
    """Train and held-out PSNR of the recipe's model on ``clip`` (25 frames each at ``size`` px, tracked
    features), computed once and kept in ``work/clip/generalisation_<tag>_<size>.json``; None without the
    model."""
    from nerfvc.render.renderer import Renderer
    from nerfvc.train.dataset import load_dataset
    from nerfvc.train.trainer import generalisation_scores

    tag = run_tag(minutes, train)
    model, cache = work / clip / f"model_{tag}", work / clip / f"generalisation_{tag}_{size}.json"
    if cache.is_file():
        return read_json(cache)
    if not (model / "model.json").is_file():
        return None
    scores = generalisation_scores(
        Renderer.from_model_dir(model).model, load_dataset(work / clip / "dataset"), 25, size
    )
    write_json_atomic(cache, scores)
    return scores


def pair_rows(a: list[dict], b: list[dict]) -> list[dict]:
    """Rows of recipes A and B matched by (clip, point label)."""
    by_key = {(r["clip"], r["label"]): r for r in b}
    out = []
    for ra in a:
        rb = by_key.get((ra["clip"], ra["label"]))
        if rb is not None:
            out.append({"clip": ra["clip"], "label": ra["label"], "a": ra, "b": rb})
    return out


def summary_of(pairs: list[dict], clips: list[dict]) -> dict:
    """Per metric: mean of B − A and the number of pairs where B is better; per recipe: pairs that beat the
    freeze on all seven metrics."""
    per_metric = metric_changes([(p["a"]["nerfvc"], p["b"]["nerfvc"]) for p in pairs])
    gaps = [(c["a"]["generalisation_gap_db"], c["b"]["generalisation_gap_db"]) for c in clips]
    return {
        "metrics": per_metric,
        "mean_gap_db": [sum(g) / len(g) for g in zip(*gaps)] if gaps else None,
        "a_beats_freeze_everywhere": sum(not p["a"]["loses_to_freeze"] for p in pairs),
        "b_beats_freeze_everywhere": sum(not p["b"]["loses_to_freeze"] for p in pairs),
        "pairs": len(pairs),
    }


def _f(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}g}"


def markdown(doc: dict) -> str:
    m = doc["machine"] or {}
    flags = ", ".join(k for k, v in (m.get("isa") or {}).items() if v)
    name_a, name_b = doc["a"] or "default", doc["b"] or "default"
    if doc["work_b"] != doc["work"]:
        name_a, name_b = f"{name_a}` in `{doc['work']}", f"{name_b}` in `{doc['work_b']}"
    lines = [
        f"# Recipe A/B at {doc['size']}²: A = `{name_a}`, B = `{name_b}`",
        "",
        *([doc["note"], ""] if doc.get("note") else []),
        f"Command: `{doc['command']}`. {doc['minutes']:g} minutes of training per clip; eval machine: "
        f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, {flags or 'no ISA flags recorded'}.",
        "",
        "Each cell: **A → B**. *loses on*: the metrics where that recipe is not better than the frozen first "
        "frame. *steps*: training steps in the budget; *CPU s*: the CPU seconds they took (the same wall "
        "budget: ~1 core = the budget's seconds, 2 cores = twice that, less = other jobs took the cores).",
        "",
        "| clip | point | " + " | ".join(ISSUE16) + " | A loses on | B loses on | steps | CPU s |",
        "|---" * (len(ISSUE16) + 6) + "|",
    ]
    for p in doc["pairs"]:
        a, b = p["a"], p["b"]
        cells = [f"{_f(a['nerfvc'][k])} → {_f(b['nerfvc'][k])}" for k in ISSUE16]
        lines.append(
            f"| {p['clip']} | {p['label']} | "
            + " | ".join(cells)
            + f" | {', '.join(a['loses_to_freeze']) or 'none'} | {', '.join(b['loses_to_freeze']) or 'none'}"
            + f" | {a['train_steps'] or '–'} → {b['train_steps'] or '–'}"
            + f" | {_f(p['cpu_a'], 4)} → {_f(p['cpu_b'], 4)} |"
        )
    s = doc["summary"]
    lines += ["", *metric_change_table(s["metrics"], ("mean B − A", "B better on"))]
    lines += [
        "",
        f"Points better than the freeze on all seven metrics: A {s['a_beats_freeze_everywhere']}, "
        f"B {s['b_beats_freeze_everywhere']} of {s['pairs']}.",
    ]
    lines += [
        "",
        f"Generalisation ({doc['size']}², tracked features, 25 frames each): PSNR on training frames and "
        "held-out frames, and the gap (train − held-out).",
        "",
        "| clip | A train | A held-out | A gap | B train | B held-out | B gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in doc["generalisation"]:
        a, b = c["a"], c["b"]
        lines.append(
            f"| {c['clip']} | {a['train_psnr']:.2f} | {a['psnr']:.2f} | {a['generalisation_gap_db']:.2f} | "
            f"{b['train_psnr']:.2f} | {b['psnr']:.2f} | {b['generalisation_gap_db']:.2f} |"
        )
    if s["mean_gap_db"]:
        lines += ["", f"Mean gap: A {s['mean_gap_db'][0]:.2f} dB, B {s['mean_gap_db'][1]:.2f} dB."]
    if doc["unpaired"]:
        lines += ["", f"Not compared (a report missing): {', '.join(doc['unpaired'])}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("work/bench10"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--a", default="", help="recipe A's `nerfvc train` options, as given to clips.py")
    ap.add_argument("--b", required=True, help="recipe B's options")
    ap.add_argument("--work-b", type=Path, help="B's work directory (default --work)")
    ap.add_argument("--refine-a", type=int, default=0, help="A's reports are clips.py --refine N's")
    ap.add_argument("--refine-b", type=int, default=0, help="B's reports are clips.py --refine N's")
    ap.add_argument("--note", default="", help="one paragraph under the title: what differs between A and B")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    if not args.work.is_dir():
        sys.exit(f"recipe_ab.py: error: --work {args.work} is not a directory")
    work_b = args.work_b or args.work
    if not work_b.is_dir():
        sys.exit(f"recipe_ab.py: error: --work-b {work_b} is not a directory")
    rows_a, miss_a, machine = clip_rows(args.work, args.minutes, args.size, args.a, args.refine_a)
    rows_b, miss_b, _ = clip_rows(work_b, args.minutes, args.size, args.b, args.refine_b)
    pairs = pair_rows(rows_a, rows_b)
    for p in pairs:
        p["cpu_a"] = train_cpu_seconds(args.work, p["clip"], args.minutes, args.a)
        p["cpu_b"] = train_cpu_seconds(work_b, p["clip"], args.minutes, args.b)
    clips = []
    for clip in sorted({p["clip"] for p in pairs}):
        ga, gb = (
            generalisation(w, clip, args.minutes, t, args.size)
            for w, t in ((args.work, args.a), (work_b, args.b))
        )
        if ga and gb:
            clips.append({"clip": clip, "a": ga, "b": gb})
    doc = {
        "command": "python benchmarks/recipe_ab.py " + shlex.join(sys.argv[1:]),
        "work": str(args.work),
        "work_b": str(work_b),
        "minutes": args.minutes,
        "size": args.size,
        "a": args.a,
        "b": args.b,
        "refine_a": args.refine_a,
        "refine_b": args.refine_b,
        "note": args.note,
        "machine": machine,
        "pairs": pairs,
        "unpaired": sorted(set(miss_a) | set(miss_b)),
        "generalisation": clips,
        "summary": summary_of(pairs, clips),
    }
    write_results(args.out, doc, markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
