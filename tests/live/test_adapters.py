"""``nerfvc.live.adapters``: the tracked source (a video paced at its frame rate, through the sender
pipeline's tracker) and the render-worker factory."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.features import load_features, model_input
from nerfvc.io.video import write_video
from nerfvc.live.adapters import TrackedSource, make_renderer
from nerfvc.pipeline import SenderPipeline
from tests.pipeline.fakes import fake_tracker


def test_tracked_source_yields_the_model_features_of_a_video(tiny_model, tmp_path, monkeypatch):
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    n = 6
    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(n)], 25.0)
    calls = fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
    source = TrackedSource(SenderPipeline.from_model_dir(model), video=str(video), keep_images=True)
    assert source.fps == 25.0
    assert calls == [{"path": str(model), "max_num_faces": 1}]
    frames = list(source)
    assert len(frames) + source.skipped == n  # a frame more than 2 intervals late is skipped, not tracked
    expected = model_input(feats["expression"], feats["torso"], 2)  # (N, 81): what the NeRF takes
    times = [f.timestamp for f in frames]
    assert times == sorted(times) and all(f.capture_time is not None for f in frames)
    for i, f in enumerate(frames):  # the fake tracker hands out frame i's features at its i-th call
        np.testing.assert_array_equal(f.expression, expected[i])
        np.testing.assert_array_equal(f.pose, feats["pose"][i])
        assert f.image is not None and f.image.shape == (32, 48, 3)  # uncropped, for the classic codec


def test_tracked_source_with_a_frame_step_tracks_only_every_mth_frame(tiny_model, tmp_path, monkeypatch):
    """A live sender at a low rate sends every m-th camera frame; the others are not even tracked, and the
    media covered (``camera_frames``, what the rates are per second of) still counts every frame."""
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    n = 9
    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((32, 48, 3), 25 * i, np.uint8) for i in range(n)], 25.0)
    fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
    source = TrackedSource(SenderPipeline.from_model_dir(model), video=str(video))
    source.frame_step = 3
    frames = list(source)
    assert source.camera_frames == n and len(frames) + source.skipped == 3
    assert all(round(f.timestamp * 25) % 3 == 0 for f in frames)  # camera frames 0, 3, 6


def test_live_encoder_frame_step_follows_the_target_rate(tiny_model):
    sender = SenderPipeline.from_model_dir(tiny_model[1])
    assert sender.stream_encoder(25.0).frame_step == 1
    assert sender.stream_encoder(25.0, kbps=1000.0).frame_step == 1  # plenty of rate: every frame
    assert sender.stream_encoder(25.0, kbps=0.01).frame_step == 4  # none fits: the coarsest
    assert sender.stream_encoder(25.0, frame_step=2, kbps=0.01).frame_step == 2  # given: kept


def test_live_encoder_of_an_embedding_model_sends_every_frame(tiny_embed_model):
    """The embedding's causal window was trained on consecutive frames: no frame step, even at a low rate."""
    sender = SenderPipeline.from_model_dir(tiny_embed_model[1])
    assert sender.stream_encoder(25.0, kbps=0.01).frame_step == 1
    with pytest.raises(InputError, match="frame step 1"):
        sender.stream_encoder(25.0, frame_step=2)


def test_tracked_source_needs_exactly_one_source(tiny_model):
    sender = SenderPipeline.from_model_dir(tiny_model[1])
    for kwargs in ({}, {"video": "x.mp4", "camera": 0}):
        with pytest.raises(InputError, match="either --video"):
            TrackedSource(sender, **kwargs)


def test_make_renderer_builds_the_models_renderer(tiny_model):
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    renderer = make_renderer(model)
    x = model_input(feats["expression"][0], feats["torso"][0], 2)
    img = renderer.render(x, feats["pose"][0], 24, 16)
    assert img.shape == (16, 24, 3) and img.dtype == np.uint8
