"""Enrollment coverage: expression proxies and pose angles, what is missing, held-out frames outside."""

import json

import numpy as np
from scipy.spatial.transform import Rotation

from nerfvc.face.coverage import ADVICE, TYPICAL, coverage, expression_proxies, pose_angles, summary_lines


def _clip(n: int, mouth: np.ndarray, yaw_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (n,478,3) of a still face whose inner lips open by ``mouth`` inter-ocular distances, and
    poses (n,12) turned by ``yaw_deg`` about the head's vertical axis."""
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 200, (478, 3))
    base[33], base[263] = (100, 150, 0), (200, 150, 0)  # eye corners: inter-ocular distance 100 px
    base[13] = (150, 200, 0)
    lm = np.repeat(base[None], n, 0)
    lm[:, 14] = lm[:, 13] + np.stack([np.zeros(n), 100 * mouth, np.zeros(n)], 1)
    rot = Rotation.from_euler("y", yaw_deg[:, None], degrees=True).as_matrix().reshape(n, 9)
    return lm, np.concatenate([rot, np.tile([0.0, 0.0, 0.5], (n, 1))], 1)


def test_proxies_are_in_inter_ocular_distances_and_angles_in_degrees():
    lm, pose = _clip(5, np.array([0.0, 0.1, 0.2, 0.3, 0.4]), np.array([-20.0, -10, 0, 10, 20]))
    np.testing.assert_allclose(expression_proxies(lm)["mouth_open"], [0, 0.1, 0.2, 0.3, 0.4], atol=1e-9)
    angles = pose_angles(pose)  # from the mean pose: yaw about y, nothing else
    np.testing.assert_allclose(angles[:, 1], [-20, -10, 0, 10, 20], atol=1e-6)
    np.testing.assert_allclose(angles[:, [0, 2]], 0, atol=1e-6)


def test_a_clip_without_open_mouth_or_head_turns_is_told_so_and_its_surprised_test_end_flagged():
    n = 100
    mouth = np.r_[np.linspace(0.0, 0.02, 80), np.full(20, 0.5)]  # talks barely, then gasps in the test split
    lm, pose = _clip(n, mouth, np.zeros(n))
    cov = coverage(lm, pose, 80)
    assert cov["measures"]["mouth_open"]["of_typical"] < 0.5
    assert ADVICE["mouth_open"] in cov["missing"] and ADVICE["yaw"] in cov["missing"]
    assert cov["measures"]["mouth_open"]["test_outside"] == 1.0 and cov["test_frames_outside"] == 1.0
    assert any("mouth" in line for line in summary_lines(cov))
    json.dumps(cov)  # written as coverage.json


def test_a_clip_that_shows_the_typical_range_misses_nothing_there():
    n = 100
    t = np.linspace(0, 4 * np.pi, n)
    mouth = 0.05 + TYPICAL["mouth_open"] * (0.5 + 0.5 * np.sin(t))  # opens as wide as people do, throughout
    yaw = TYPICAL["yaw"] * np.sin(1.3 * t)
    cov = coverage(*_clip(n, mouth, yaw), 80)
    assert cov["measures"]["mouth_open"]["of_typical"] > 0.8 and cov["measures"]["yaw"]["of_typical"] > 0.8
    assert ADVICE["mouth_open"] not in cov["missing"] and ADVICE["yaw"] not in cov["missing"]
    assert cov["test_frames_outside"] < 0.5  # the test end repeats what training saw
