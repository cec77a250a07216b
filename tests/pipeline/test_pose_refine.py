"""The sender's head-pose refinement (nerfvc.pipeline.pose_refine): from a tracked pose a little off it finds
one whose render draws the camera frame better, keeps the tracked pose where the fit runs beyond its limits,
starts each frame from its predecessor's correction, and refuses what it cannot use."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import nerfvc.pipeline.pose_refine as pose_refine
from nerfvc.errors import InputError
from nerfvc.pipeline.pose_refine import PoseRefineConfig, PoseRefiner, corrected_pose
from tests.pipeline.scenes import POSE, SIZE, random_head

FEATURES = np.zeros(81, np.float32)  # a neutral expression (79) and no torso shift (2)
OFFSET = np.array([0.0, 0.0, 0.05, 0.02, -0.015, 0.0])  # 2.9° about the view axis, 2.5 cm sideways


def _frame(renderer, pose: np.ndarray) -> np.ndarray:
    """The receiver's render of the neutral expression at ``pose`` as a uint8 camera frame."""
    img = renderer.render_float(FEATURES, pose, SIZE, SIZE).numpy()
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _error(renderer, pose: np.ndarray, frame: np.ndarray) -> float:
    return float(np.abs(_frame(renderer, pose).astype(float) - frame).mean())


def test_a_correction_turns_the_head_about_its_origin_and_moves_it():
    np.testing.assert_allclose(corrected_pose(POSE, np.zeros(6)), POSE)
    pose = corrected_pose(POSE, OFFSET)
    expected = Rotation.from_rotvec(OFFSET[:3]).as_matrix()  # POSE's rotation is the identity
    np.testing.assert_allclose(pose[:9].reshape(3, 3), expected, atol=1e-12)
    np.testing.assert_allclose(pose[9:], POSE[9:] + OFFSET[3:], atol=1e-7)


def test_refinement_finds_a_pose_that_draws_the_frame_better():
    renderer = random_head()
    frame = _frame(renderer, corrected_pose(POSE, OFFSET))
    refiner = PoseRefiner(renderer, PoseRefineConfig(iterations=4, size=SIZE, rotation_prior=0.0))
    x = refiner.refine(frame, FEATURES, POSE)
    assert x.shape == (6,)
    assert _error(renderer, corrected_pose(POSE, x), frame) < 0.5 * _error(renderer, POSE, frame)
    assert np.linalg.norm(x - OFFSET) < 0.5 * np.linalg.norm(OFFSET)


def test_the_rotation_prior_holds_the_turn_near_the_trackers_and_leaves_the_shift_free():
    renderer = random_head()
    frame = _frame(renderer, corrected_pose(POSE, OFFSET))
    free, held = (
        PoseRefiner(renderer, PoseRefineConfig(iterations=4, size=SIZE, rotation_prior=p)).refine(
            frame, FEATURES, POSE
        )
        for p in (0.0, 0.01)
    )
    assert np.linalg.norm(held[:3]) < 0.5 * np.linalg.norm(free[:3])
    assert np.linalg.norm(held[3:] - OFFSET[3:]) < 0.5 * np.linalg.norm(OFFSET[3:])  # the shift still found
    with pytest.raises(InputError, match="rotation_prior"):
        PoseRefiner(renderer, PoseRefineConfig(rotation_prior=-1.0))


def test_a_fit_beyond_the_limits_keeps_the_tracked_pose_and_zero_steps_send_it(monkeypatch):
    renderer = random_head()
    frame = _frame(renderer, corrected_pose(POSE, OFFSET))
    assert not np.any(
        PoseRefiner(renderer, PoseRefineConfig(iterations=0, size=SIZE)).refine(frame, FEATURES, POSE)
    )
    refiner = PoseRefiner(renderer, PoseRefineConfig(iterations=4, size=SIZE, rotation_prior=0.0))
    assert np.any(refiner.refine(frame, FEATURES, POSE))
    monkeypatch.setattr(pose_refine, "POSE_MAX_ROTATION_DEG", 0.5)  # the fit turns the head ~2.9°
    assert not np.any(refiner.refine(frame, FEATURES, POSE))
    monkeypatch.undo()
    monkeypatch.setattr(pose_refine, "POSE_MAX_TRANSLATION", 0.005)  # … and moves it 2.5 cm at 1 m
    assert not np.any(refiner.refine(frame, FEATURES, POSE))


def test_a_clip_starts_each_frame_from_its_predecessors_correction():
    renderer = random_head()
    frame = _frame(renderer, corrected_pose(POSE, OFFSET))
    refiner = PoseRefiner(renderer, PoseRefineConfig(iterations=1, size=SIZE, rotation_prior=0.0))
    seen = []
    poses = refiner.refine_clip(
        np.stack([frame, frame]),
        np.stack([FEATURES] * 2),
        np.stack([POSE] * 2),
        lambda i, n: seen.append((i, n)),
    )
    assert poses.shape == (2, 12) and poses.dtype == np.float32 and seen == [(1, 2), (2, 2)]
    first = refiner.refine(frame, FEATURES, POSE)
    np.testing.assert_allclose(poses[0], corrected_pose(POSE, first), atol=1e-6)
    # the second frame went on from the first's correction: one more step's worth closer than a cold start
    np.testing.assert_allclose(
        poses[1], corrected_pose(POSE, refiner.refine(frame, FEATURES, POSE, first)), atol=1e-6
    )
    assert _error(renderer, poses[1], frame) < _error(renderer, poses[0], frame)


@pytest.mark.parametrize(
    "frames,pose,message",
    [
        (np.zeros((1, 8, 8), np.uint8), np.stack([POSE]), "RGB"),
        (np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 12), np.nan), "12 finite"),
        (np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 9)), "12 finite"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.stack([POSE]), "2 frames"),
    ],
)
def test_bad_input_is_refused(frames, pose, message):
    refiner = PoseRefiner(random_head(), PoseRefineConfig(iterations=1, size=SIZE))
    with pytest.raises(InputError, match=message):
        refiner.refine_clip(frames, np.zeros((len(pose), 81), np.float32), pose)
    with pytest.raises(InputError, match="iterations"):
        PoseRefiner(random_head(), PoseRefineConfig(iterations=-1))


def test_the_fit_renders_at_most_at_the_model_cameras_size():
    renderer = random_head()  # a 24 px camera
    assert (PoseRefiner(renderer).width, PoseRefiner(renderer).height) == (SIZE, SIZE)
    assert PoseRefiner(renderer, PoseRefineConfig(size=16)).width == 16
