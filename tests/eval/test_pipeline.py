"""The ``nerfvc eval`` path for nerfvc itself (``nerfvc.eval.pipeline``): track the test frames, code them at
several rates with the real codec, decode, render, through the MODEL's pipelines."""

from __future__ import annotations

import numpy as np

from nerfvc.eval.pipeline import code_rate_points, render_sequence, track_frames
from nerfvc.features import load_features, model_input
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from tests.pipeline.fakes import fake_tracker


def test_track_code_and_render_a_torso_model(tiny_model, monkeypatch):
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    n = 8
    fake_tracker(monkeypatch, feats["expression"][:n], feats["pose"][:n], torso=feats["torso"][:n])
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    frames = np.stack([np.full((40, 32, 3), i, np.uint8) for i in range(n)])  # taller than the camera
    cropped, clip = track_frames(sender, frames, 25.0)
    assert cropped.shape == (n, 32, 32, 3)  # the reference is cropped as the tracker sees the frames
    np.testing.assert_array_equal(cropped[:, 0, 0, 0], np.arange(n))
    np.testing.assert_array_equal(clip.features, model_input(feats["expression"], feats["torso"], 2)[:n])
    assert clip.fps is not None and abs(clip.fps - 25.0) < 1e-9

    points = code_rate_points(sender, receiver, clip.features, clip.pose, 25.0, [1.0, 50.0], 2)
    assert [p.label for p in points] == ["target 1 kbps, 2 fr/packet", "target 50 kbps, 2 fr/packet"]
    for p in points:
        assert p.expression.shape == (n, 81) and p.pose.shape == (n, 12)
        assert abs(p.kbps - p.bits_per_frame * 25.0 / 1000) < 1e-9  # real bytes (header included) per second
    assert points[0].bits_per_frame <= points[1].bits_per_frame
    fine = np.abs(points[1].expression - clip.features).max()
    assert fine <= np.abs(points[0].expression - clip.features).max() and fine < 0.05

    video = render_sequence(receiver, points[1].expression, points[1].pose, 16)
    assert video.shape == (n, 16, 16, 3) and video.dtype == np.uint8


def test_rate_points_of_an_embedding_model_are_expressions(tiny_embed_model):
    ds, model = tiny_embed_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    (point,) = code_rate_points(sender, receiver, clip.features, clip.pose, 25.0, [100.0])
    assert point.expression.shape == (30, 79)  # expanded back to the NeRF's expression, not the 8-d code
    exact = receiver.to_expression(sender.to_code(clip.features))  # what a lossless channel would give
    assert np.abs(point.expression - exact).max() < 0.1 * np.abs(exact).max()
    assert render_sequence(receiver, point.expression[:2], point.pose[:2], 16).shape == (2, 16, 16, 3)


def test_nerfvc_eval_with_a_model_writes_its_rate_points(tiny_model, tmp_path, monkeypatch):
    """``nerfvc eval MODEL VIDEO`` (``run_eval``) end to end on a tiny clip: nerfvc and nerfvc+guard are
    scored beside the classic codec (the tracker is a stand-in: mediapipe finds no face in these frames)."""
    import json

    from nerfvc.eval.options import EvalOptions
    from nerfvc.eval.run import run_eval
    from nerfvc.io.video import write_video

    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(20)], 25.0)
    opts = EvalOptions(
        str(video), str(tmp_path / "rep"), model=str(model), sizes="32", codecs="x265", points=1,
        no_face=True, dists_frames=0, kbps="2",
    )  # fmt: skip
    res = json.loads(run_eval(opts)["results"].read_text())
    assert [p["label"] for p in res["systems"]["nerfvc"]] == ["target 2 kbps"]
    assert len(res["systems"]["nerfvc+guard"]) == 1 and "x265" in res["systems"]
    # the sender refined the tracked head poses against the clip's frames, as `nerfvc encode VIDEO` does
    assert res["nerfvc"]["refine_pose"]["iterations"] == EvalOptions.refine_pose > 0
    assert res["nerfvc"]["refine_pose"]["s_per_frame"] > 0
