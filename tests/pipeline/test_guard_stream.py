"""The quality guard end to end in files: ``nerfvc encode VIDEO --guard`` adds fallback pictures where the
model's render is worse than a picture would be, the features decode exactly as without them, and
``nerfvc decode`` shows them in the video."""

from __future__ import annotations

import av
import numpy as np

from nerfvc.cli import main
from nerfvc.codec.framing import HEADER_SIZE
from nerfvc.datasetdir import frame_path
from nerfvc.features import load_features
from nerfvc.io.video import write_video
from nerfvc.pipeline import ReceiverPipeline
from nerfvc.train.dataset import load_rgb
from tests.pipeline.fakes import fake_tracker


def _video_frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_encode_with_the_guard_adds_pictures_that_decode_shows(tiny_model, tmp_path, monkeypatch, capsys):
    ds, model = tiny_model  # trained for 2 steps: its renders are far from the frames, so the guard fires
    feats = load_features(ds / "features.npz")
    frames = np.stack([load_rgb(frame_path(ds, i)) for i in range(len(feats["pose"]))])  # (24,32,32,3)
    video = tmp_path / "in.mp4"
    write_video(video, iter(frames), 25.0)
    streams = {}
    for name, extra in [("plain", []), ("guard", ["--guard"])]:
        fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
        streams[name] = tmp_path / f"{name}.nvc"
        args = ["encode", str(video), "--model", str(model), "-o", str(streams[name]), "--refine-pose", "0"]
        assert main([*args, *extra]) == 0
    out = capsys.readouterr().out
    assert "guard:" in out and "fallback pictures" in out

    receiver = ReceiverPipeline.from_model_dir(model)
    plain = receiver.decode_stream(streams["plain"].read_bytes())
    guarded = receiver.decode_stream(streams["guard"].read_bytes())
    np.testing.assert_array_equal(guarded.code, plain.code)  # the guard only adds packets
    np.testing.assert_array_equal(guarded.pose, plain.pose)
    rep = guarded.report
    assert not plain.report.fallback and any(p.picture for p in rep.fallback)
    grown = streams["guard"].stat().st_size - streams["plain"].stat().st_size
    assert rep.fallback_bytes == grown > 0 and rep.corrupt_packets == 0
    assert streams["guard"].read_bytes()[:HEADER_SIZE] == streams["plain"].read_bytes()[:HEADER_SIZE]

    err = {}
    for name, stream in streams.items():
        mp4 = tmp_path / f"{name}.mp4"
        assert main(["decode", str(stream), "--model", str(model), "-o", str(mp4), "--size", "32"]) == 0
        err[name] = np.abs(_video_frames(mp4).astype(int) - frames.astype(int)).mean()
    assert "frames with a fallback picture" in capsys.readouterr().out
    assert err["guard"] < 0.8 * err["plain"]  # closer to the frames: the pictures, over untrained renders


def test_the_guard_needs_the_video(tiny_model, tmp_path, capsys):
    ds, model = tiny_model
    out = tmp_path / "s.nvc"
    args = [
        "encode",
        "--features",
        str(ds / "features.npz"),
        "--model",
        str(model),
        "-o",
        str(out),
        "--guard",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--guard" in err and "VIDEO" in err and len(err.splitlines()) == 1 and not out.exists()
