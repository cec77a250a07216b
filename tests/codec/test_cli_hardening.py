"""CLI hardening: numeric options, unreachable rates, undecodable streams, videos without a single face."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from nerfvc.codec.framing import HEADER_SIZE
from nerfvc.codec.tables import CodecTables
from nerfvc.errors import EXIT_PARTIAL
from nerfvc.features import FaceFeatures, load_features, save_features


@pytest.fixture
def features_file(tmp_path, feats):
    path = tmp_path / "f.npz"
    save_features(path, expression=feats[0][:40], pose=feats[1][:40])
    return path


def _encode(cli, model, features, out, *extra):
    return cli(["encode", "--features", str(features), "--model", str(model), "-o", str(out), *extra])


@pytest.mark.parametrize(
    "extra",
    [
        ["--kbps", "-1"],
        ["--kbps", "0"],
        ["--kbps", "nan"],
        ["--kbps", "inf"],
        ["--rdoq", "nan"],
        ["--rdoq", "-1"],
        ["--step", "0"],
        ["--fps", "0.001"],
        ["--fps", "4290000"],
        ["--keyint", "0"],
    ],
)
def test_bad_numbers_are_refused(tmp_path, cli, model_dir, features_file, capsys, extra):
    out = tmp_path / "s.nvc"
    with pytest.raises(SystemExit) as e:
        _encode(cli, model_dir[0], features_file, out, *extra)
    assert e.value.code == 2
    assert f"argument {extra[0]}" in capsys.readouterr().err
    assert not out.exists()


def test_unreachable_kbps_writes_nothing(tmp_path, cli, model_dir, features_file, capsys):
    out = tmp_path / "s.nvc"
    assert _encode(cli, model_dir[0], features_file, out, "--kbps", "1e-6") == 2
    err = capsys.readouterr().err.strip()
    assert "out of reach" in err and "\n" not in err
    assert not out.exists()


def test_fully_concealed_stream_exits_non_zero(tmp_path, cli, model_dir, features_file, capsys):
    model = model_dir[0]
    stream, out = tmp_path / "s.nvc", tmp_path / "d.npz"
    assert _encode(cli, model, features_file, stream) == 0
    stream.write_bytes(stream.read_bytes()[:HEADER_SIZE] + b"\xff" * 40)  # no packet survives
    capsys.readouterr()
    assert cli(["decode", str(stream), "--model", str(model), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing decodable" in err and "\n" not in err
    assert not out.exists()


# these tests are about tracking: the tracker's poses are sent (no renders against the stub's frames)
TRACKED_POSES = ["--refine-pose", "0"]


def _fake_video(monkeypatch, model, code, pose, ok):
    """Stub the tracker (``ok[i]``: frame i has a single face) and the video reader."""

    class FakeTracker:
        def __init__(self):
            self.i = 0

        @classmethod
        def from_dir(cls, path, **kwargs):
            assert str(path) == str(model) and kwargs.get("max_num_faces", 1) >= 2
            return cls()

        def track(self, frame, timestamp=None):
            i, self.i = self.i, self.i + 1
            if not ok[i]:  # the real tracker's fallback: its default pose
                return FaceFeatures(np.zeros_like(code[i]), np.zeros_like(pose[i]), np.zeros((478, 3)), False)
            return FaceFeatures(code[i], pose[i], np.zeros((478, 3), np.float32), True)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    def read_frames(path):
        for i in range(len(ok)):
            yield np.zeros((8, 8, 3), np.uint8), i / 25

    tracker_mod = types.ModuleType("nerfvc.face.tracker")
    tracker_mod.FaceTracker = FakeTracker
    video_mod = types.ModuleType("nerfvc.io.video")
    video_mod.read_frames = read_frames
    monkeypatch.setitem(sys.modules, "nerfvc.face.tracker", tracker_mod)
    monkeypatch.setitem(sys.modules, "nerfvc.io.video", video_mod)


def test_encode_video_without_a_face_fails(tmp_path, cli, model_dir, feats, monkeypatch, capsys):
    model = model_dir[0]
    _fake_video(monkeypatch, model, feats[0], feats[1], [False] * 20)
    out = tmp_path / "v.nvc"
    assert (
        cli(["encode", str(tmp_path / "clip.mp4"), "--model", str(model), "-o", str(out), *TRACKED_POSES])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "no single face found in any of 20 frames" in err and "\n" not in err
    assert not out.exists()
    _fake_video(monkeypatch, model, feats[0], feats[1], [True] * 5 + [False] * 15)
    assert (
        cli(["encode", str(tmp_path / "clip.mp4"), "--model", str(model), "-o", str(out), *TRACKED_POSES])
        == 2
    )
    assert "only 5 of 20 frames" in capsys.readouterr().err
    assert not out.exists()


def test_encode_video_reports_tracking_failures(tmp_path, cli, model_dir, feats, monkeypatch, capsys):
    model = model_dir[0]
    code, pose = feats[0][:20], feats[1][:20]
    ok = [i not in (0, 1, 9) for i in range(20)]
    _fake_video(monkeypatch, model, code, pose, ok)
    out = tmp_path / "v.nvc"
    assert (
        cli(["encode", str(tmp_path / "clip.mp4"), "--model", str(model), "-o", str(out), *TRACKED_POSES])
        == 0
    )
    assert "no single face in 3 of 20 frames (0, 1, 9)" in capsys.readouterr().err
    assert cli(["decode", str(out), "--model", str(model), "-o", str(tmp_path / "d.npz")]) == 0
    dec = load_features(tmp_path / "d.npz")
    ref = CodecTables.load(model).reference(code, pose, 0)[1]
    # frames before the first tracked one take its pose, not the tracker's default
    np.testing.assert_allclose(dec["pose"][0], ref[2], atol=0.05)


def test_partly_concealed_stream_is_written_and_exits_3(tmp_path, cli, model_dir, features_file, capsys):
    model = model_dir[0]
    stream, out = tmp_path / "s.nvc", tmp_path / "d.npz"
    assert _encode(cli, model, features_file, stream) == 0
    data = bytearray(stream.read_bytes())
    data[-3] ^= 0xFF  # damage the last packet: the frames before it decode, its frames are concealed
    stream.write_bytes(bytes(data))
    assert cli(["decode", str(stream), "--model", str(model), "-o", str(out)]) == EXIT_PARTIAL
    assert out.exists() and "concealed" in capsys.readouterr().out
    valid = np.load(out)["valid"]
    assert valid.any() and not valid.all()
