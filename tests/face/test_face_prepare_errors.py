"""Bad input to ``nerfvc prepare``: one-line error, exit code 2, no dataset that claims to be complete."""

import cv2
import numpy as np
import pytest
from face_testdata import AOC, GERMAN

from nerfvc.cli import main
from nerfvc.features import load_features
from nerfvc.io import read_frames, write_video


def _frames(path, n, size=256):
    return [
        cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f, _ in read_frames(path, max_frames=n)
    ]


def _run(capsys, video, out, *extra):
    code = main(["prepare", str(video), "-o", str(out), "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if e.startswith("nerfvc ")]  # mediapipe's own log lines are not ours
    return code, err


def _assert_failed(code, err, out, pattern):
    assert code == 2
    assert len(err) == 1 and err[0].startswith("nerfvc prepare: error:"), err
    assert pattern in err[0], err[0]
    assert not out.exists()  # bad input leaves no (incomplete) dataset behind


def test_not_a_video(tmp_path, capsys):
    bad = tmp_path / "clip.mp4"
    bad.write_text("hello, I am text\n")
    code, err = _run(capsys, bad, tmp_path / "ds")
    _assert_failed(code, err, tmp_path / "ds", "not a readable video")


def test_missing_and_truncated(tmp_path, capsys):
    code, err = _run(capsys, tmp_path / "nope.mp4", tmp_path / "ds")
    _assert_failed(code, err, tmp_path / "ds", "file not found")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(GERMAN.read_bytes()[:300_000])
    code, err = _run(capsys, cut, tmp_path / "ds2")
    _assert_failed(code, err, tmp_path / "ds2", "cut.mp4")


def test_no_face(tmp_path, capsys):
    blank = tmp_path / "blank.mp4"
    write_video(blank, [np.full((128, 128, 3), 90 + k, np.uint8) for k in range(12)], fps=25)
    code, err = _run(capsys, blank, tmp_path / "ds")
    _assert_failed(code, err, tmp_path / "ds", "no face")


def test_two_faces(tmp_path, capsys):
    a, b = _frames(GERMAN, 10), _frames(AOC, 10)
    frames = []
    for x, y in zip(a, b):
        img = np.full((512, 512, 3), 120, np.uint8)
        img[128:384, :256], img[128:384, 256:] = x, y
        frames.append(img)
    video = tmp_path / "two.mp4"
    write_video(video, frames, fps=25)
    code, err = _run(capsys, video, tmp_path / "ds")
    _assert_failed(code, err, tmp_path / "ds", "two faces")


def test_face_lost_for_most_frames(tmp_path, capsys):
    frames = _frames(GERMAN, 6) + [np.full((256, 256, 3), 60, np.uint8)] * 14
    video = tmp_path / "lost.mp4"
    write_video(video, frames, fps=25)
    code, err = _run(capsys, video, tmp_path / "ds")
    _assert_failed(code, err, tmp_path / "ds", "face found in only 6 of 20 frames")


def test_face_lost_for_a_few_frames_is_interpolated(tmp_path, capsys):
    frames = _frames(GERMAN, 20)
    for k in (8, 9, 10):
        frames[k] = np.full_like(frames[k], 60)
    video = tmp_path / "gap.mp4"
    write_video(video, frames, fps=25)
    code, _ = _run(capsys, video, tmp_path / "ds", "--expr-dims", "8")
    assert code == 0
    f = load_features(tmp_path / "ds/features.npz")
    assert f["valid"].tolist() == [k not in (8, 9, 10) for k in range(20)]
    assert f["expression"].shape == (20, 8)
    lm = f["landmarks"]
    # linear in time between the last and first good frames
    np.testing.assert_allclose(lm[9], 0.5 * (lm[7] + lm[11]), atol=1e-3)
    assert np.isfinite(f["pose"]).all()


def test_bad_arguments(tmp_path, capsys):
    code, err = _run(capsys, GERMAN, tmp_path / "ds", "--max-frames", "1")
    _assert_failed(code, err, tmp_path / "ds", "--max-frames")
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        main(["prepare", str(GERMAN), "-o", str(tmp_path / "ds"), "--crop", "diagonal"])
    assert e.value.code == 2
