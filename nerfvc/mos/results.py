"""``nerfvc mos results``: rater screening, MOS and preference with 95% intervals, JSON, plot, report section.

Screening (P.910 habit, ACR with hidden reference): a rater whose mean score of the hidden references is
below ``min_reference`` (default 3.5: on average "Fair" or worse for the unimpaired original), or who rated
no reference, is excluded from every number and listed with the reason. Per stimulus: MOS with a Student-t
95% interval, and DMOS (ACR-HR: score − the same rater's score of the same source's reference + 5, not
clipped). Per paired comparison: the share of votes preferring nerfvc with a Wilson 95% interval.
"""

from __future__ import annotations

import html
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from nerfvc.errors import InputError
from nerfvc.fsutil import atomic_path, write_json_atomic
from nerfvc.mos.manifest import REFERENCE, VOTES, Manifest, load
from nerfvc.mos.stats import mean_ci, wilson
from nerfvc.mos.store import Vote, VoteStore

MIN_REFERENCE = 3.5


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def _order(m: Manifest, sid: str) -> tuple:
    s = m.stimuli[sid]
    rank = 0 if s.system == REFERENCE else (1 if s.system == "nerfvc" else 2)
    return s.source, rank, s.system, s.kbps or 0.0


def analyse(m: Manifest, votes: Sequence[Vote], min_reference: float = MIN_REFERENCE) -> dict:
    """Screen the raters and compute every number from the manifest and the votes (no file access). Raters
    are numbered from 1, as ``nerfvc mos serve`` lists their links."""
    if any(v.trial not in m.trials for v in votes):
        raise InputError(f"{VOTES} holds votes on trials that are not in this test's manifest")
    clip = {s.id: s.video for s in m.sources}
    is_ref = {t.id: m.stimuli[t.stimuli[0]].system == REFERENCE for t in m.trials.values() if t.kind == "acr"}
    by_rater: dict[int, list[Vote]] = defaultdict(list)
    for v in votes:
        by_rater[v.rater].append(v)
    raters, kept = [], set()
    for r in sorted(by_rater):
        refs = [v.score for v in by_rater[r] if is_ref.get(v.trial) and v.score is not None]
        ref_mean = sum(refs) / len(refs) if refs else None
        reason = ""
        if ref_mean is None:
            reason = "rated no hidden reference"
        elif ref_mean < min_reference:
            reason = f"hidden reference rated {ref_mean:.2f} on average (< {min_reference:g})"
        else:
            kept.add(r)
        raters.append(
            {"rater": r + 1, "votes": len(by_rater[r]), "trials": len(m.trials),
             "reference_mean": _r(ref_mean), "excluded": bool(reason), "reason": reason}
        )  # fmt: skip
    good = [v for v in votes if v.rater in kept]
    ref_score = {  # (rater, source) -> score of that source's hidden reference
        (v.rater, m.stimuli[m.trials[v.trial].stimuli[0]].source): v.score
        for v in good
        if is_ref.get(v.trial)
    }
    scores: dict[str, list[int]] = defaultdict(list)
    diffs: dict[str, list[int]] = defaultdict(list)
    prefs: dict[str, list[bool]] = defaultdict(list)
    for v in good:
        t = m.trials[v.trial]
        if t.kind == "acr" and v.score is not None:
            s = m.stimuli[t.stimuli[0]]
            scores[s.id].append(v.score)
            ref = ref_score.get((v.rater, s.source))
            if s.system != REFERENCE and ref is not None:
                diffs[s.id].append(v.score - ref + 5)
        elif t.kind != "acr":
            prefs[t.id].append(v.preferred == t.stimuli[0])
    acr = []
    for t in sorted((t for t in m.trials.values() if t.kind == "acr"), key=lambda t: _order(m, t.stimuli[0])):
        s = m.stimuli[t.stimuli[0]]
        mos, lo, hi = mean_ci(scores[s.id])
        dmos, dlo, dhi = mean_ci(diffs[s.id])
        acr.append(
            {"stimulus": s.id, "source": s.source, "clip": clip[s.source], "system": s.system,
             "label": s.label, "kbps": _r(s.kbps), "roles": list(s.roles), "n": len(scores[s.id]),
             "mos": _r(mos), "ci95": [_r(lo), _r(hi)], "dmos": _r(dmos), "dmos_ci95": [_r(dlo), _r(dhi)]}
        )  # fmt: skip
    preference = []
    pairs = sorted((t for t in m.trials.values() if t.kind == "pair"), key=lambda t: _order(m, t.stimuli[1]))
    for t in pairs:
        ours, other = (m.stimuli[s] for s in t.stimuli)
        n, k = len(prefs[t.id]), sum(prefs[t.id])
        lo, hi = wilson(k, n)
        preference.append(
            {"trial": t.id, "source": ours.source, "clip": clip[ours.source], "role": t.role,
             "nerfvc": {"label": ours.label, "kbps": _r(ours.kbps)},
             "other": {"system": other.system, "label": other.label, "kbps": _r(other.kbps)},
             "n": n, "nerfvc_preferred": k, "percent": _r(100 * k / n if n else None, 1),
             "ci95": [_r(100 * lo, 1), _r(100 * hi, 1)] if n else [None, None]}
        )  # fmt: skip
    return {
        "size": m.size,
        "seconds": m.seconds,
        "sources": [{"id": s.id, "clip": s.video, "eval_dir": s.eval_dir} for s in m.sources],
        "screening": {
            "rule": "exclude a rater whose mean hidden-reference ACR score is below min_reference_mean, "
            "or who rated no hidden reference",
            "min_reference_mean": min_reference,
        },
        "raters": raters,
        "raters_kept": len(kept),
        "raters_excluded": len(raters) - len(kept),
        "votes_used": len(good),
        "acr": acr,
        "preference": preference,
    }


def compute(test_dir: str | Path, min_reference: float = MIN_REFERENCE) -> dict:
    """:func:`analyse` the votes stored in ``test_dir`` (none yet: every count is 0)."""
    m = load(test_dir)
    votes: list[Vote] = []
    if (Path(test_dir) / VOTES).is_file():
        store = VoteStore(test_dir)
        try:
            votes = store.votes()
        finally:
            store.close()
    return {"test": str(Path(test_dir).resolve()), **analyse(m, votes, min_reference)}


def _label(row: dict) -> str:
    return f"{row['clip']}: vs {row['other']['system']} {row['other']['kbps']:g} kbps ({row['role']})"


def _errors(rows: list[dict], key: str, ci: str) -> list[list[float]]:
    """Matplotlib's ``[below, above]`` error bars of ``rows[key]`` from their ``[low, high]`` interval."""
    below = [r[key] - r[ci][0] if r[ci][0] is not None else 0.0 for r in rows]
    above = [r[ci][1] - r[key] if r[ci][1] is not None else 0.0 for r in rows]
    return [below, above]


def plot(results: dict, path: str | Path) -> None:
    """PNG: MOS (95% CI) against bitrate per system, and the share preferring nerfvc per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nerfvc.eval.report import plain_log_ticks

    voted = [r for r in results["preference"] if r["n"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 1.6 + max(3.0, 0.45 * len(voted))), dpi=100)
    rows = [r for r in results["acr"] if r["mos"] is not None]
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted((r for r in rows if r["system"] == system), key=lambda r: r["kbps"] or 0)
        if system == REFERENCE:
            for r in pts:
                a1.axhline(r["mos"], color="0.2", ls="--", lw=1, label=f"hidden reference ({r['clip']})")
            continue
        x, y = [r["kbps"] for r in pts], [r["mos"] for r in pts]
        style = {"lw": 2.5, "color": "#d62728"} if system == "nerfvc" else {"lw": 1.2}
        a1.errorbar(x, y, yerr=_errors(pts, "mos", "ci95"), fmt="o", capsize=3, label=system, **style)
    a1.set_xscale("log")
    plain_log_ticks(a1.xaxis)
    a1.set_ylim(1, 5.2)
    a1.set_xlabel("bitrate (kbps, log)")
    a1.set_ylabel("MOS (ACR 1-5), 95% CI")
    a1.set_title("Mean opinion score")
    a1.grid(True, alpha=0.3)
    if rows:
        a1.legend(fontsize=8)
    y = list(range(len(voted)))
    pct = [r["percent"] for r in voted]
    a2.barh(y, pct, color="#d62728", alpha=0.7)
    a2.errorbar(pct, y, xerr=_errors(voted, "percent", "ci95"), fmt="none", ecolor="k", capsize=3)
    a2.set_yticks(y, [_label(r) for r in voted], fontsize=8)
    a2.axvline(50, color="0.3", ls=":")
    a2.set_xlim(0, 100)
    a2.set_xlabel("votes preferring nerfvc (%), 95% Wilson CI")
    a2.set_title("Paired comparison")
    if not rows and not voted:
        fig.suptitle("no votes yet")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def _num(v: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "–" if v is None else f"{v:{fmt}}{unit}"


def _ci(lo: float | None, hi: float | None, fmt: str = ".2f") -> str:
    return "–" if lo is None or hi is None else f"[{lo:{fmt}}, {hi:{fmt}}]"


def section(results: dict, plot_name: str, json_name: str) -> str:
    """The "Subjective" section of an eval report: what was tested, by how many raters, the tables."""
    e = html.escape
    scr = results["screening"]
    h = [
        "<p class=note>Subjective test (ITU-T P.910 habits: ACR 5-point with hidden reference, paired "
        f"comparison, randomised balanced order): {results['seconds']:g} s clips at {results['size']}², "
        f"{results['raters_kept']} rater(s) kept, {results['raters_excluded']} excluded by screening "
        f"(mean hidden-reference score below {scr['min_reference_mean']:g}, or no reference rated). "
        f"{'' if results['votes_used'] else 'No votes yet. '}Bitrates are those of the whole test split. "
        f"All numbers: <a href='{e(json_name)}'>{e(json_name)}</a>.</p>"
    ]
    rows = "".join(
        f"<tr><td>{e(r['clip'])}</td><td>{e(r['system'])}</td><td>{e(r['label'])}</td>"
        f"<td>{_num(r['kbps'])}</td><td>{r['n']}</td><td>{_num(r['mos'])}</td><td>{_ci(*r['ci95'])}</td>"
        f"<td>{_num(r['dmos'])}</td></tr>"
        for r in results["acr"]
    )
    h.append(
        "<table><tr><th>clip</th><th>system</th><th>point</th><th>kbps</th><th>votes</th><th>MOS</th>"
        f"<th>95% CI</th><th>DMOS</th></tr>{rows}</table>"
    )
    rows = "".join(
        f"<tr><td>{e(r['clip'])}</td><td>{_num(r['nerfvc']['kbps'])}</td><td>{e(r['other']['system'])}</td>"
        f"<td>{_num(r['other']['kbps'])}</td><td>{e(r['role'])}</td><td>{r['n']}</td>"
        f"<td>{_num(r['percent'], '.0f', '%')}</td><td>{_ci(r['ci95'][0], r['ci95'][1], '.0f')}</td></tr>"
        for r in results["preference"]
    )
    h.append(
        "<table><tr><th>clip</th><th>nerfvc kbps</th><th>vs</th><th>kbps</th><th>rate</th><th>votes</th>"
        f"<th>prefer nerfvc</th><th>95% CI (Wilson)</th></tr>{rows}</table>"
    )
    h.append(f"<img src='{e(plot_name)}' alt='subjective results'>")
    return "\n".join(h)


def write(results: dict, json_path: str | Path, plot_path: str | Path) -> None:
    """Write the results JSON and the plot."""
    write_json_atomic(json_path, results)
    plot(results, plot_path)


def add_to_report(eval_dir: str | Path, results: dict, plot_path: str | Path) -> Path:
    """Copy the results and plot into an eval report as ``subjective.{json,png}`` and add its "Subjective"
    section (replacing an earlier one); returns ``report.html``."""
    from nerfvc.eval.report import add_section

    eval_dir = Path(eval_dir)
    if not (eval_dir / "report.html").is_file():
        raise InputError(f"{eval_dir}: no report.html (not a `nerfvc eval` report directory)")
    write_json_atomic(eval_dir / "subjective.json", results)
    with atomic_path(eval_dir / "subjective.png") as tmp:
        shutil.copyfile(plot_path, tmp)
    for f in ("subjective.json", "subjective.png"):
        (eval_dir / f).chmod(0o644)
    return add_section(
        eval_dir, "subjective", "Subjective", section(results, "subjective.png", "subjective.json")
    )
