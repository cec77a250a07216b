"""``nerfvc mos build`` from tiny fake eval reports: stimuli, trials, blinding; refusals leave nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from nerfvc.cli import main
from nerfvc.errors import InputError
from nerfvc.io.video import probe
from nerfvc.mos.build import build_test
from nerfvc.mos.manifest import load

from .conftest import fake_eval


def test_built_test_holds_the_right_stimuli_and_trials(built):
    m = load(built)
    assert (m.size, m.seconds, m.seed, len(m.raters)) == (32, 0.2, 7, 4)
    a = m.sources[0]
    assert (a.video, a.frames, a.fps) == ("a.mp4", 5, 25.0) and Path(a.eval_dir).name == "a"
    assert [s.video for s in m.sources] == ["a.mp4", "b.mp4"]
    got = Counter((s.source, s.system, s.kbps, s.roles) for s in m.stimuli.values())
    assert got == Counter([
        ("s0", "reference", None, ("reference",)),
        ("s0", "nerfvc", 0.8, ("nerfvc",)),
        ("s0", "nerfvc", 10.0, ("nerfvc",)),
        ("s0", "x265", 6.0, ("lowest", "matched")),  # closest to 0.8 kbps and x265's floor
        ("s0", "x265", 12.0, ("matched",)),  # closest to 10 kbps
        ("s0", "vvenc", 5.0, ("lowest", "matched")),
        ("s1", "reference", None, ("reference",)),
        ("s1", "nerfvc", 1.0, ("nerfvc",)),
        ("s1", "x265", 6.0, ("lowest", "matched")),
    ])  # fmt: skip
    acr = [t for t in m.trials.values() if t.kind == "acr"]
    assert sorted(t.stimuli[0] for t in acr) == sorted(m.stimuli)  # every stimulus rated once
    pairs = {
        (m.stimuli[t.stimuli[0]].kbps, m.stimuli[t.stimuli[1]].system, m.stimuli[t.stimuli[1]].kbps): t.role
        for t in m.trials.values()
        if t.kind == "pair"
    }
    assert all(m.stimuli[t.stimuli[0]].system == "nerfvc" for t in m.trials.values() if t.kind == "pair")
    assert pairs == {
        (0.8, "x265", 6.0): "lowest+matched",
        (10.0, "x265", 12.0): "matched",
        (0.8, "vvenc", 5.0): "lowest+matched",
        (10.0, "vvenc", 5.0): "matched",
        (1.0, "x265", 6.0): "lowest+matched",
    }
    assert [s.system for s in m.training] == ["reference", "vvenc"]  # best and most impaired anchors


def test_stimuli_are_blinded_browser_playable_clips(built):
    m = load(built)
    files = [built / s.file for s in (*m.stimuli.values(), *m.training)]
    assert sorted(p.name for p in (built / "stimuli").iterdir()) == sorted(p.name for p in files)
    words = ("nerfvc", "x265", "vvenc", "reference", "ground", "crf", "target")
    for s in (*m.stimuli.values(), *m.training):
        assert not any(w in s.file or w in s.id for w in words)
        info = probe(built / s.file)
        assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 32, 32, 5)
    assert not any(w in t for t in m.trials for w in words)
    manifest = built / "test.json"
    assert json.loads(manifest.read_text())["format"] == "nerfvc-mos/1"
    assert manifest.stat().st_mode & 0o777 == 0o644


def _no_leftovers(root: Path) -> None:
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "a temporary build dir was left"


def test_refusals_write_nothing(tmp_path):
    good = fake_eval(tmp_path, "good", nerfvc=(1.0,), codecs={"x265": (6.0,)}, n=4)
    out = tmp_path / "test"

    def refused(dirs, match, **kw):
        with pytest.raises(InputError, match=match):
            build_test(dirs, out, seconds=0.1, **kw)
        assert not out.exists()
        _no_leftovers(tmp_path)

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "results.json").write_text(json.dumps({"systems": {}}))
    refused([plain], "--keep-videos")
    refused([tmp_path / "missing"], "file not found")
    refused([good], r"no videos kept at 64 px \(kept: 32\)", size=64)
    no_ours = fake_eval(tmp_path, "no_ours", nerfvc=(), codecs={"x265": (6.0,)}, n=4)
    refused([good, no_ours], "no nerfvc video")
    refused([fake_eval(tmp_path, "no_codec", codecs={}, n=4)], "no classic codec")
    broken = fake_eval(tmp_path, "broken", nerfvc=(1.0,), codecs={"x265": (6.0,)}, n=4)
    (broken / "videos" / "32" / "x265-0.mkv").unlink()
    refused([good, broken], "kept video missing or empty: videos/32/x265-0.mkv")
    # a transcode failing midway (a kept file that is not a video) leaves no half-built test either
    (broken / "videos" / "32" / "x265-0.mkv").write_bytes(b"not a video")
    refused([good, broken], "cannot transcode")

    out.mkdir()
    (out / "votes.sqlite").write_bytes(b"precious")
    with pytest.raises(InputError, match="never overwritten"):
        build_test([good], out)
    assert (out / "votes.sqlite").read_bytes() == b"precious"


def test_cli_build_prints_a_summary_and_errors_on_one_line(tmp_path, capsys):
    good = fake_eval(tmp_path, "good", nerfvc=(1.0,), codecs={"x265": (6.0,)}, n=4)
    args = ["mos", "build", str(good), "-o", str(tmp_path / "t"), "--seconds", "0.1", "--seed", "1"]
    assert main(args) == 0
    assert "3 stimuli from 1 report(s) at 32², 3 ACR + 1 paired trials per rater" in capsys.readouterr().out
    assert main(["mos", "build", str(good), "-o", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nerfvc mos: error:") and "never overwritten" in err and err.count("\n") == 1
