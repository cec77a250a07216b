"""``nerfvc eval`` / ``eval-baselines`` parse into ``EvalOptions``, whose defaults are the CLI's."""

from __future__ import annotations

from nerfvc.cli import main
from nerfvc.eval import run as eval_run
from nerfvc.eval.options import EvalOptions


def test_cli_defaults_are_the_options_defaults(monkeypatch):
    seen = []
    monkeypatch.setattr(eval_run, "run_eval", seen.append)
    assert main(["eval", "MODEL", "clip.mp4", "-o", "REPORT"]) == 0
    assert main(["eval-baselines", "clip.mp4", "-o", "REPORT", "--sizes", "96", "--no-face"]) == 0
    assert seen == [
        EvalOptions("clip.mp4", "REPORT", model="MODEL"),
        EvalOptions("clip.mp4", "REPORT", sizes="96", no_face=True),
    ]
