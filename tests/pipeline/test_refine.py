"""The sender's analysis by synthesis (nerfvc.pipeline.refine): from a perturbed expression it finds one that
draws the camera frame better, moves only what it is told to, and refuses what it cannot use."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nerfvc.camera import Camera
from nerfvc.cli import main
from nerfvc.codec.tables import index_from_step
from nerfvc.datasetdir import frame_path
from nerfvc.errors import InputError
from nerfvc.features import load_features
from nerfvc.io.video import write_video
from nerfvc.pipeline import SenderPipeline
from nerfvc.pipeline.commands import FILE_FRAMES_PER_PACKET
from nerfvc.pipeline.refine import FeatureRefiner, RefineConfig
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.renderer import Renderer, frame_rays
from nerfvc.train.dataset import load_rgb
from tests.pipeline.fakes import fake_tracker

SIZE = 24


def _renderer(seed: int = 0) -> Renderer:
    """A random head in front of a 24 px camera, dense enough to be seen, whose colour and shape follow the
    expression (random blend shapes and MLPs), over a black background."""
    torch.manual_seed(seed)
    cfg = ModelConfig(head_lo=[-0.2, -0.25, -0.2], head_hi=[0.2, 0.2, 0.2], torso_dims=2)
    cfg.fine.blend_res = 7
    cfg.n_coarse = cfg.n_fine = 8
    model = PortraitNeRF(cfg).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.grid.table.normal_(0, 1.0)
            head.sigma_net[2].bias[0] += 2.0
            head.color_net[2].weight.mul_(8.0)  # colours spread over [0, 1], not all near grey
        model.fine.blend.normal_(0, 0.5)
        model.occupancy.mask.fill_(True)
    camera = Camera.from_fov(SIZE, SIZE, 40.0)
    return Renderer(model, camera, np.zeros((SIZE, SIZE, 3), np.uint8))


POSE = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1.0], np.float32)  # the head 1 unit in front


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


def test_encode_refines_the_tracked_features_against_the_videos_frames(tiny_model, tmp_path, monkeypatch):
    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    frames = np.stack([load_rgb(frame_path(ds, i)) for i in range(len(feats["pose"]))])  # (24,32,32,3)
    video = tmp_path / "in.mp4"
    write_video(video, iter(frames), 25.0)
    seen = []

    def refine_clip(self, clip, config, renderer=None, progress=None):  # records what the CLI hands over
        seen.append((clip.frames.shape, config.iterations))
        return dataclasses.replace(clip, features=clip.features + 0.05)

    monkeypatch.setattr(SenderPipeline, "refine_clip", refine_clip)
    streams = {}
    for name, extra in [("plain", []), ("refined", ["--refine", "3"])]:
        fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
        out = tmp_path / f"{name}.nvc"
        assert (
            main(["encode", str(video), "--model", str(model), "-o", str(out), "--step", "0.5", *extra]) == 0
        )
        streams[name] = out.read_bytes()
    assert seen == [((24, 96, 96, 3), 3)]  # every frame, cropped and kept at the fit's size (96 px)
    # what the refinement returned is what was coded
    fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
    sender = SenderPipeline.from_model_dir(model)
    clip = sender.track_video(video)
    options = {"step_index": index_from_step(0.5), "frames_per_packet": FILE_FRAMES_PER_PACKET}
    assert streams["refined"] == sender.encode_stream(clip.features + 0.05, clip.pose, 25.0, **options)
    assert streams["plain"] == sender.encode_stream(clip.features, clip.pose, 25.0, **options)
    assert streams["plain"] != streams["refined"]


def test_refining_needs_the_video(tiny_model, tmp_path, capsys):
    ds, model = tiny_model
    out = tmp_path / "s.nvc"
    args = ["encode", "--features", str(ds / "features.npz"), "--model", str(model), "-o", str(out)]
    assert main([*args, "--refine", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--refine" in err and "VIDEO" in err and len(err.splitlines()) == 1 and not out.exists()
