"""Screening, MOS and preference numbers on synthetic votes match hand-computed values; the report section."""

from __future__ import annotations

import json

import pytest

from nerfvc.errors import InputError
from nerfvc.mos import results as R
from nerfvc.mos.manifest import Manifest, Source, Stimulus, Trial, plan_raters
from nerfvc.mos.store import Vote


def _manifest() -> Manifest:
    """One source: hidden reference R, nerfvc N (0.9 kbps), x265 X (6.6 kbps); 3 ACR trials, 1 pair."""
    stim = {
        "R": Stimulus("R", "stimuli/R.mp4", "s0", "reference", "ground truth", None, ("reference",)),
        "N": Stimulus("N", "stimuli/N.mp4", "s0", "nerfvc", "target 0.8", 0.9, ("nerfvc",)),
        "X": Stimulus("X", "stimuli/X.mp4", "s0", "x265", "crf 51", 6.6, ("lowest", "matched")),
    }
    trials = {f"a{s}": Trial(f"a{s}", "acr", (s,)) for s in stim}
    trials["p"] = Trial("p", "pair", ("N", "X"), "lowest+matched")
    src = Source("s0", "/reports/german", "german.mp4", 0, 100, 25.0)
    return Manifest(1, 256, 4.0, (src,), stim, trials, (stim["R"], stim["X"]), plan_raters(trials, 5, 1))


def _votes() -> list[Vote]:
    acr = {0: (5, 4, 2), 1: (4, 4, 3), 2: (5, 3, 1), 3: (2, 5, 5)}  # (R, N, X) scores per rater
    prefer = {0: "N", 1: "N", 2: "X", 3: "X"}
    out = []
    for r, scores in acr.items():
        out += [Vote(r, f"a{s}", i, v, None, None, 0.0) for i, (s, v) in enumerate(zip("RNX", scores))]
        out.append(Vote(r, "p", 3, None, "A", prefer[r], 0.0))
    return [*out, Vote(4, "aN", 0, 1, None, None, 0.0)]  # rater index 4 never rated a reference


def test_votes_from_another_test_are_refused():
    with pytest.raises(InputError, match="not in this test"):
        R.analyse(_manifest(), [Vote(0, "elsewhere", 0, 3, None, None, 0.0)])


def test_screening_mos_dmos_and_preference_by_hand():
    res = R.analyse(_manifest(), _votes())
    reasons = {r["rater"]: r["reason"] for r in res["raters"]}
    assert reasons == {  # numbered from 1, as `serve` prints the links
        1: "",
        2: "",
        3: "",
        4: "hidden reference rated 2.00 on average (< 3.5)",
        5: "rated no hidden reference",
    }
    assert (res["raters_kept"], res["raters_excluded"], res["votes_used"]) == (3, 2, 12)
    acr = {r["stimulus"]: r for r in res["acr"]}
    assert [r["system"] for r in res["acr"]] == ["reference", "nerfvc", "x265"]
    # kept: raters 1-3 (indices 0-2). R: 5 4 5 → mean 4.667, sd 0.57735, t(0.975, 2) 4.302653 → ± 1.434218
    assert acr["R"]["n"] == 3 and acr["R"]["mos"] == 4.667 and acr["R"]["ci95"] == [3.232, 6.101]
    assert acr["N"]["mos"] == 3.667 and acr["N"]["ci95"] == [2.232, 5.101]  # 4 4 3
    assert acr["X"]["mos"] == 2.0 and acr["X"]["ci95"] == [-0.484, 4.484]  # 2 3 1: sd 1 → ± 2.484138
    # DMOS = score − own reference + 5: N 4 5 3 → 4.0 ± 2.484138; none for the reference itself
    assert acr["N"]["dmos"] == 4.0 and acr["N"]["dmos_ci95"] == [1.516, 6.484]
    assert acr["R"]["dmos"] is None and acr["X"]["dmos"] == 2.333
    (pair,) = res["preference"]
    # nerfvc preferred by 2 of 3 kept raters: Wilson [0.207660, 0.938508]
    assert (pair["n"], pair["nerfvc_preferred"], pair["percent"]) == (3, 2, 66.7)
    assert pair["ci95"] == [20.8, 93.9]
    assert pair["other"] == {"system": "x265", "label": "crf 51", "kbps": 6.6}
    # a laxer threshold keeps rater 4 (reference 2 ≥ 1.5): 4 votes on the pair, 2 for nerfvc
    lax = R.analyse(_manifest(), _votes(), min_reference=1.5)
    assert lax["raters_kept"] == 4 and (lax["preference"][0]["n"], lax["preference"][0]["percent"]) == (4, 50)


def test_no_votes_gives_empty_numbers_and_a_plot(tmp_path):
    res = R.analyse(_manifest(), [])
    assert res["raters"] == [] and res["votes_used"] == 0
    assert all(r["n"] == 0 and r["mos"] is None for r in res["acr"])
    assert res["preference"][0]["percent"] is None
    R.write(res, tmp_path / "r.json", tmp_path / "p.png")
    assert json.loads((tmp_path / "r.json").read_text()) == res and (tmp_path / "p.png").stat().st_size > 0
    assert "No votes yet." in R.section(res, "p.png", "r.json")


def test_subjective_section_goes_into_an_eval_report_once(tmp_path):
    res = R.analyse(_manifest(), _votes())
    R.write(res, tmp_path / "results.json", tmp_path / "subjective.png")
    report = tmp_path / "report"
    report.mkdir()
    footer = "<p class=note>All numbers: <a href='results.json'>results.json</a>.</p>"
    (report / "report.html").write_text(f"<h1>nerfvc vs baselines</h1>\n<h2>Rate points</h2>\n{footer}")
    for _ in range(2):  # rerunning replaces the section
        page = R.add_to_report(report, res, tmp_path / "subjective.png").read_text()
    assert page.count("<h2>Subjective</h2>") == 1 and page.index("Subjective") < page.index(footer)
    assert "3 rater(s) kept, 2 excluded by screening" in page and "<td>67%</td>" in page
    assert "<td>[21, 94]</td>" in page and "<td>3.67</td>" in page
    assert (report / "subjective.png").is_file()
    assert json.loads((report / "subjective.json").read_text()) == res
    with pytest.raises(InputError, match=r"no report\.html"):
        R.add_to_report(tmp_path / "nothing", res, tmp_path / "subjective.png")
    assert not (tmp_path / "nothing").exists()


def test_cli_results_writes_json_plot_and_report_section(test_dir, tmp_path, capsys):
    from nerfvc.cli import main

    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<h1>report</h1>")
    out = tmp_path / "res.json"
    assert main(["mos", "results", str(test_dir), "--json", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("0 rater(s) kept, 0 excluded, 0 votes used") and "Subjective section" in printed
    res = json.loads(out.read_text())
    assert (len(res["acr"]), len(res["preference"]), res["screening"]["min_reference_mean"]) == (9, 5, 3.5)
    assert (test_dir / "subjective.png").is_file()
    assert "<h2>Subjective</h2>" in (report / "report.html").read_text()
    assert main(["mos", "results", str(tmp_path / "nothing")]) == 2
    assert "not a test directory" in capsys.readouterr().err
