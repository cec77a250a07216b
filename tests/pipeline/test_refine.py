"""The sender's analysis by synthesis (nerfvc.pipeline.refine): from a perturbed expression it finds one that
draws the camera frame better, moves only what it is told to, and refuses what it cannot use."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nerfvc.cli import main
from nerfvc.codec.tables import index_from_step
from nerfvc.datasetdir import frame_path
from nerfvc.errors import InputError
from nerfvc.features import load_features
from nerfvc.io.video import write_video
from nerfvc.pipeline import SenderPipeline
from nerfvc.pipeline.commands import FILE_FRAMES_PER_PACKET
from nerfvc.pipeline.pose_refine import PoseRefineConfig
from nerfvc.pipeline.refine import FeatureRefiner, RefineConfig
from nerfvc.render.renderer import Renderer, frame_rays
from nerfvc.train.dataset import load_rgb
from tests.pipeline.fakes import fake_tracker
from tests.pipeline.scenes import POSE, SIZE
from tests.pipeline.scenes import random_head as _renderer


def _frame(renderer: Renderer, features: np.ndarray) -> np.ndarray:
    """What the training renderer draws for ``features`` at the fit's size, as a uint8 camera frame."""
    dirs, uv, bg = frame_rays(renderer.camera, renderer.background, SIZE, SIZE)
    with torch.no_grad():
        x = torch.from_numpy(features)[None]
        rgb = renderer.model.render_rays(dirs, uv, x, torch.from_numpy(POSE)[None], bg)["rgb"]
    return (rgb.reshape(SIZE, SIZE, 3).clamp(0, 1) * 255).round().byte().numpy()


def _error(renderer: Renderer, features: np.ndarray, frame: np.ndarray) -> float:
    return float(np.abs(_frame(renderer, features).astype(float) - frame).mean())


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_refinement_finds_an_expression_that_draws_the_frame_better(loss):
    renderer = _renderer()
    rng = np.random.default_rng(0)
    truth = np.concatenate([rng.normal(0, 1, 79), [0.01, -0.02]]).astype(np.float32)  # (81,) + torso shift
    frame = _frame(renderer, truth)
    start = truth.copy()
    start[:8] += rng.normal(0, 0.7, 8).astype(np.float32)
    refiner = FeatureRefiner(renderer, RefineConfig(iterations=15, size=SIZE, dims=8, loss=loss))
    refined = refiner.refine(frame, start, POSE)
    assert refined.dtype == np.float32 and refined.shape == start.shape
    np.testing.assert_array_equal(refined[8:], start[8:])  # the other coefficients and the torso shift
    assert _error(renderer, refined, frame) < 0.5 * _error(renderer, start, frame)
    assert np.linalg.norm(refined[:8] - truth[:8]) < np.linalg.norm(start[:8] - truth[:8])


def test_zero_iterations_send_the_tracked_features_and_a_clip_is_refined_frame_by_frame():
    renderer = _renderer()
    feats = np.random.default_rng(1).normal(0, 1, (2, 81)).astype(np.float32)
    frames = np.stack([_frame(renderer, f) for f in feats])
    off = FeatureRefiner(renderer, RefineConfig(iterations=0, size=SIZE))
    np.testing.assert_array_equal(off.refine_clip(frames, feats, np.stack([POSE, POSE])), feats)
    seen = []
    on = FeatureRefiner(renderer, RefineConfig(iterations=2, size=SIZE, dims=4))
    out = on.refine_clip(
        frames, feats + 0.5, np.stack([POSE, POSE]), progress=lambda i, n: seen.append((i, n))
    )
    assert seen == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(out[1], on.refine(frames[1], feats[1] + 0.5, POSE))


@pytest.mark.parametrize(
    "frames,features,pose,message",
    [
        (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 81), np.float32), np.zeros((1, 12)), "RGB"),
        (np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 79), np.float32), np.zeros((1, 12)), "do not fit"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 81), np.float32), np.zeros((1, 12)), "2 frames"),
    ],
)
def test_bad_input_is_refused(frames, features, pose, message):
    refiner = FeatureRefiner(_renderer(), RefineConfig(iterations=1, size=SIZE))
    with pytest.raises(InputError, match=message):
        refiner.refine_clip(frames, features, pose)


def test_an_unknown_loss_is_refused():
    with pytest.raises(InputError, match="loss"):
        FeatureRefiner(_renderer(), RefineConfig(loss="l2"))


def test_encode_refines_the_tracked_poses_and_features_against_the_videos_frames(
    tiny_model, tmp_path, monkeypatch
):
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    frames = np.stack([load_rgb(frame_path(ds, i)) for i in range(len(feats["pose"]))])  # (24,32,32,3)
    video = tmp_path / "in.mp4"
    write_video(video, iter(frames), 25.0)
    seen = []

    def refine_clip(
        self, clip, config=None, renderer=None, progress=None, pose=None
    ):  # what the CLI hands over
        seen.append((clip.frames.shape, config.iterations, pose.iterations))
        moved = clip.pose.copy()
        moved[:, 9] += 0.01 * pose.iterations  # a sideways shift per pose step, 0.05 per expression one
        return dataclasses.replace(clip, features=clip.features + 0.05 * config.iterations, pose=moved)

    monkeypatch.setattr(SenderPipeline, "refine_clip", refine_clip)
    streams = {}
    runs = [("plain", []), ("refined", ["--refine", "3"]), ("tracked", ["--refine-pose", "0"])]
    for name, extra in runs:
        fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
        out = tmp_path / f"{name}.nvc"
        assert (
            main(["encode", str(video), "--model", str(model), "-o", str(out), "--step", "0.5", *extra]) == 0
        )
        streams[name] = out.read_bytes()
    # every frame, cropped and kept at the fits' size (96 px); the pose refined by default
    steps = PoseRefineConfig.iterations
    assert steps > 0 and seen == [((24, 96, 96, 3), 0, steps), ((24, 96, 96, 3), 3, steps)]
    # what the refinement returned is what was coded
    fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
    sender = SenderPipeline.from_model_dir(model)
    clip = sender.track_video(video)
    options = {"step_index": index_from_step(0.5), "frames_per_packet": FILE_FRAMES_PER_PACKET}
    moved = clip.pose.copy()
    moved[:, 9] += 0.01 * steps
    assert streams["refined"] == sender.encode_stream(clip.features + 0.15, moved, 25.0, **options)
    assert streams["plain"] == sender.encode_stream(clip.features, moved, 25.0, **options)
    assert streams["tracked"] == sender.encode_stream(clip.features, clip.pose, 25.0, **options)
    assert len({streams["plain"], streams["refined"], streams["tracked"]}) == 3


def test_refining_needs_the_video(tiny_model, tmp_path, capsys):
    ds, model = tiny_model
    out = tmp_path / "s.nvc"
    args = ["encode", "--features", str(ds / "features.npz"), "--model", str(model), "-o", str(out)]
    for option in ("--refine", "--refine-pose"):
        assert main([*args, option, "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert option in err and "VIDEO" in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(args) == 0 and out.exists()  # a features file keeps its poses (no frames to refine with)
