"""Where nerfvc stands against the quality targets of issues 16 and 17, from the reports `benchmarks/clips.py`
left under ``--work`` (one ``nerfvc eval`` per clip and size) → ``-o``.json and ``-o``.md.

    PYTHONPATH=. .venv/bin/python benchmarks/targets.py --work work/bench10 --minutes 10 --sizes 256,512 \\
        -o benchmarks/results/targets_10min

Per clip, size and nerfvc rate point (and its ``nerfvc+guard`` twin): the seven metrics beside the frozen
first frame's, and which of them lose to it. The checks:

* issue 16: every clip, size and point beats the freeze on PSNR, SSIM, LPIPS, DISTS, CSIM, PRMSE and AUCON
  at once, with PRMSE ≤ 1.5°; the mean PSNR over the clips at 256² ≥ 28.5 dB (per point); german at 512²
  ≥ 31 dB, LPIPS ≤ 0.05 and CSIM ≥ 0.95 at ≤ 1 kbps (its lowest point, when that is ≤ 1.05 kbps);
* issue 17: ``nerfvc+guard`` beats the freeze on PSNR, LPIPS, CSIM, AUCON and PRMSE on every clip and
  size, and its mean rate over the clips is ≤ 2 kbps.

Missing reports are listed, not guessed. The training steps come from each clip's MODEL/nerf.json.
``--against OLD.json`` (an earlier run of this script) adds each point's metrics there → here and, per
metric, the mean change and the points that improved: runs trained at other times, not side by side.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerfvc.batch import report_name, run_tag
from nerfvc.eval.metrics import METRICS
from nerfvc.fsutil import read_json, write_bytes_atomic, write_json_atomic

ISSUE16 = ("psnr", "ssim", "lpips", "dists", "csim", "prmse", "aucon")
ISSUE17 = ("psnr", "lpips", "csim", "aucon", "prmse")
PRMSE_MAX = 1.5
MEAN_PSNR_256 = 28.5
GERMAN = {"clip": "mimictalk_german_anchor_20s", "size": 512, "psnr": 31.0, "lpips": 0.05, "csim": 0.95}


def metrics_lost(point: dict, freeze: dict, metrics: tuple[str, ...]) -> list[str]:
    """The metrics of ``metrics`` on which ``point`` is not better than ``freeze`` (ties lose)."""
    lose = []
    for m in metrics:
        a, b = point.get(m), freeze.get(m)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            lose.append(m)
        elif (a <= b) if METRICS[m][1] else (a >= b):
            lose.append(m)
    return lose


def train_steps(model: Path) -> int | None:
    """The training steps recorded in MODEL/nerf.json (None without a model)."""
    nerf = model / "nerf.json"
    return read_json(nerf).get("trained", {}).get("steps") if nerf.is_file() else None


def clip_rows(
    work: Path, minutes: float, size: int, train: str = "", refine: int = 0
) -> tuple[list[dict], list[str], dict | None]:
    """(rows, clips without a report at ``size``, the first report's machine record) of one recipe (its
    reports with the sender's refinement of ``refine`` iterations: ``clips.py --refine``)."""
    rows, missing, machine = [], [], None
    tag = run_tag(minutes, train)
    for clip_dir in sorted(p for p in work.iterdir() if p.is_dir()):
        results = clip_dir / report_name(tag, size, refine) / "results.json"
        if not results.is_file():
            missing.append(clip_dir.name)
            continue
        res = read_json(results)
        machine = machine or res.get("machine")
        systems = res["resolution"][str(size)]
        freeze = systems["freeze"][0]
        guarded = {p["label"]: p for p in systems.get("nerfvc+guard", [])}
        for p in systems["nerfvc"]:
            g = guarded.get(p["label"])
            rows.append(
                {
                    "clip": clip_dir.name,
                    "size": size,
                    "label": p["label"],
                    "nerfvc": {k: p.get(k) for k in ("kbps", *ISSUE16)},
                    "freeze": {k: freeze.get(k) for k in ("kbps", *ISSUE16)},
                    "loses_to_freeze": metrics_lost(p, freeze, ISSUE16),
                    "guard": None
                    if g is None
                    else {
                        **{k: g.get(k) for k in ("kbps", "fallback_share", *ISSUE17)},
                        "loses_to_freeze": metrics_lost(g, freeze, ISSUE17),
                    },
                    "train_steps": train_steps(clip_dir / f"model_{tag}"),
                }
            )
    return rows, missing, machine


def checks(rows: list[dict], complete: bool) -> dict:
    """The issue 16 / 17 targets over ``rows`` (each False unless every report is there: ``complete``)."""
    i16 = [r for r in rows if r["loses_to_freeze"] or (r["nerfvc"]["prmse"] or math.inf) > PRMSE_MAX]
    at256: dict[str, list[float]] = {}
    for r in rows:
        if r["size"] == 256:
            at256.setdefault(r["label"], []).append(r["nerfvc"]["psnr"])
    mean256 = {k: sum(v) / len(v) for k, v in at256.items()}
    g = [r for r in rows if r["clip"] == GERMAN["clip"] and r["size"] == GERMAN["size"]]
    g1 = min(g, key=lambda r: r["nerfvc"]["kbps"])["nerfvc"] if g else None
    guarded = [r for r in rows if r["guard"] is not None]
    guard_kbps = sum(r["guard"]["kbps"] for r in guarded) / len(guarded) if guarded else None
    return {
        "complete": complete,
        "issue16_every_point_beats_freeze": complete and not i16,
        "issue16_points_failing": len(i16),
        "issue16_points": len(rows),
        "issue16_mean_psnr_256": mean256,
        "issue16_mean_psnr_256_met": complete and bool(mean256) and max(mean256.values()) >= MEAN_PSNR_256,
        "issue16_german_512_lowest_point": g1,
        "issue16_german_512_met": bool(
            g1
            and g1["kbps"] <= 1.05
            and g1["psnr"] >= GERMAN["psnr"]
            and g1["lpips"] <= GERMAN["lpips"]
            and g1["csim"] >= GERMAN["csim"]
        ),
        "issue17_guard_points_failing": sum(bool(r["guard"]["loses_to_freeze"]) for r in guarded),
        "issue17_guard_points": len(guarded),
        "issue17_mean_guard_kbps": guard_kbps,
        "issue17_met": complete
        and bool(guarded)
        and not any(r["guard"]["loses_to_freeze"] for r in guarded)
        and guard_kbps is not None
        and guard_kbps <= 2.0,
    }


def metric_changes(pairs: list[tuple[dict, dict]]) -> dict[str, dict]:
    """Per metric of the seven, over ``(A, B)`` pairs of nerfvc metric dicts: the mean of B − A, the pairs
    where B is better (in the metric's own direction) and how many pairs have both values."""
    per_metric = {}
    for m in ISSUE16:
        d = [(b[m], a[m]) for a, b in pairs if a.get(m) is not None and b.get(m) is not None]
        higher = METRICS[m][1]
        per_metric[m] = {
            "mean_b_minus_a": sum(b - a for b, a in d) / len(d) if d else None,
            "b_better": sum((b > a) if higher else (b < a) for b, a in d),
            "pairs": len(d),
        }
    return per_metric


def metric_change_table(
    metrics: dict[str, dict], headers: tuple[str, str], name: Callable[[str], str] = str
) -> list[str]:
    """:func:`metric_changes` as a markdown table: one row per metric (``name(metric)``), the mean change
    and the pairs where B is better under ``headers``."""
    lines = [f"| metric | {headers[0]} | {headers[1]} |", "|---|---|---|"]
    for m, v in metrics.items():
        lines.append(f"| {name(m)} | {_f(v['mean_b_minus_a'])} | {v['b_better']} of {v['pairs']} |")
    return lines


def against(rows: list[dict], old_rows: list[dict]) -> dict:
    """``rows`` (B) matched to ``old_rows`` (A) by (clip, size, point): per metric the mean change and the
    points where it improved (:func:`metric_changes`)."""
    old = {(r["clip"], r["size"], r["label"]): r for r in old_rows}
    pairs = [(old[k], r) for r in rows if (k := (r["clip"], r["size"], r["label"])) in old]
    return {
        "points": [
            {
                "clip": b["clip"],
                "size": b["size"],
                "label": b["label"],
                "old": a["nerfvc"],
                "new": b["nerfvc"],
                "old_steps": a.get("train_steps"),
                "new_steps": b.get("train_steps"),
            }
            for a, b in pairs
        ],
        "metrics": metric_changes([(a["nerfvc"], b["nerfvc"]) for a, b in pairs]),
        "old_points_beating_freeze": sum(not a["loses_to_freeze"] for a, _ in pairs),
        "new_points_beating_freeze": sum(not b["loses_to_freeze"] for _, b in pairs),
    }


def against_markdown(cmp: dict, path: str) -> list[str]:
    """The ``--against`` section: one row per matched point (old → new), then the per-metric summary."""
    lines = [
        f"## Against `{path}` (trained at another time: not side by side)",
        "",
        "| clip | size | point | " + " | ".join(METRICS[m][0] for m in ISSUE16) + " | steps |",
        "|---" * (len(ISSUE16) + 4) + "|",
    ]
    for p in cmp["points"]:
        cells = [f"{_f(p['old'].get(m))} → {_f(p['new'].get(m))}" for m in ISSUE16]
        steps = f"{p['old_steps'] or '–'} → {p['new_steps'] or '–'}"
        lines.append(f"| {p['clip']} | {p['size']}² | {p['label']} | " + " | ".join(cells) + f" | {steps} |")
    lines += [
        "",
        *metric_change_table(cmp["metrics"], ("mean change", "improved on"), lambda m: METRICS[m][0]),
    ]
    lines += [
        "",
        f"Points better than the freeze on all seven metrics: {cmp['old_points_beating_freeze']} → "
        f"{cmp['new_points_beating_freeze']} of {len(cmp['points'])}.",
        "",
    ]
    return lines


def write_results(out: Path, doc: dict, text: str) -> None:
    """``doc`` as ``out``.json and ``text`` as ``out``.md, and ``text`` on stdout."""
    write_json_atomic(out.with_suffix(".json"), doc)
    write_bytes_atomic(out.with_suffix(".md"), text.encode())
    print(text)


def _f(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}g}"


def markdown(summary: dict) -> str:
    """One table per size and the target checks."""
    m = summary["machine"] or {}
    flags = ", ".join(k for k, v in (m.get("isa") or {}).items() if v)
    lines = [
        "# nerfvc against the issue 16 / 17 quality targets",
        "",
        f"Command: `{summary['command']}`. Reports from `benchmarks/clips.py --minutes "
        f"{summary['minutes']:g}" + (f" --train '{summary['train']}'" if summary["train"] else "") + "` "
        f"under `{summary['work']}`; eval machine: {m.get('cpu_model', '?')}, "
        f"{m.get('cores', '?')} cores, {flags or 'no ISA flags recorded'}.",
        "",
        "Each cell: **nerfvc / frozen first frame**. *loses on*: the metrics where nerfvc is not better than "
        "the freeze (issue 16 asks for none, and PRMSE ≤ 1.5°); *guard*: `nerfvc+guard` kbps, frames in "
        "fallback and the issue 17 metrics it loses on. *steps*: training steps in the time budget.",
        "",
    ]
    heads = ["kbps", "PSNR", "SSIM", "LPIPS", "DISTS", "CSIM", "PRMSE°", "AUCON"]
    for size in summary["sizes"]:
        lines += [
            f"## {size}²",
            "",
            "| clip | point | " + " | ".join(heads) + " | loses on | guard | steps |",
            "|---" * (len(heads) + 5) + "|",
        ]
        for r in (r for r in summary["rows"] if r["size"] == size):
            n, f = r["nerfvc"], r["freeze"]
            cells = [f"{_f(n[k])} / {_f(f[k])}" for k in ("kbps", *ISSUE16)]
            g = r["guard"]
            gcell = (
                "–"
                if g is None
                else f"{_f(g['kbps'])} kbps, {_f(g['fallback_share'], 2)}, "
                f"{', '.join(g['loses_to_freeze']) or 'none'}"
            )
            tcell = str(r["train_steps"] or "–")
            lose = ", ".join(r["loses_to_freeze"]) or "none"
            lines.append(
                f"| {r['clip']} | {r['label']} | " + " | ".join(cells) + f" | {lose} | {gcell} | {tcell} |"
            )
        if summary["missing"].get(str(size)):
            lines += ["", f"No report yet: {', '.join(summary['missing'][str(size)])}."]
        lines.append("")
    c = summary["checks"]
    mean = ", ".join(f"{k}: {v:.2f} dB" for k, v in c["issue16_mean_psnr_256"].items()) or "–"
    g1 = c["issue16_german_512_lowest_point"]
    lines += [
        "## Targets",
        "",
        f"- Reports complete: {c['complete']}.",
        "- Issue 16, every clip / size / point better than the freeze on all seven metrics with PRMSE "
        f"≤ 1.5°: {c['issue16_every_point_beats_freeze']} ({c['issue16_points_failing']} of "
        f"{c['issue16_points']} points fail).",
        f"- Issue 16, mean PSNR over the clips at 256² ≥ 28.5 dB: {c['issue16_mean_psnr_256_met']} ({mean}).",
        "- Issue 16, german 512² ≥ 31 dB, LPIPS ≤ 0.05, CSIM ≥ 0.95 at ≤ 1 kbps: "
        + (
            f"{c['issue16_german_512_met']} ({_f(g1['kbps'])} kbps: {_f(g1['psnr'])} dB, LPIPS "
            f"{_f(g1['lpips'])}, CSIM {_f(g1['csim'])})."
            if g1
            else "no report."
        ),
        "- Issue 17, nerfvc+guard better than the freeze on PSNR, LPIPS, CSIM, AUCON, PRMSE everywhere and "
        f"a mean rate ≤ 2 kbps: {c['issue17_met']} ({c['issue17_guard_points_failing']} of "
        f"{c['issue17_guard_points']} points fail; mean {_f(c['issue17_mean_guard_kbps'])} kbps).",
        "",
    ]
    if summary.get("against"):
        lines += against_markdown(summary["against"], summary["against_path"])
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("work/bench10"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--train", default="", help="the recipe's `nerfvc train` options, as given to clips.py")
    ap.add_argument("--refine", type=int, default=0, help="the reports of clips.py --refine N")
    ap.add_argument("--against", type=Path, help="an earlier targets JSON: each point's change since then")
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results/targets_10min"))
    args = ap.parse_args()
    if not args.work.is_dir():
        sys.exit(f"targets.py: error: --work {args.work} is not a directory")
    old_rows = None
    if args.against is not None:
        try:
            old_rows = read_json(args.against)["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"targets.py: error: --against {args.against} is not a targets JSON ({e})")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows, missing, machine = [], {}, None
    for size in sizes:
        r, miss, mach = clip_rows(args.work, args.minutes, size, args.train, args.refine)
        rows += r
        missing[str(size)] = miss
        machine = machine or mach
    summary = {
        "command": "python benchmarks/targets.py " + " ".join(sys.argv[1:]),
        "work": str(args.work),
        "minutes": args.minutes,
        "train": args.train,
        "refine": args.refine,
        "sizes": sizes,
        "machine": machine,
        "rows": rows,
        "missing": missing,
        "checks": checks(rows, complete=not any(missing.values())),
        "against_path": str(args.against) if args.against else None,
        "against": against(rows, old_rows) if old_rows is not None else None,
    }
    write_results(args.out, summary, markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
