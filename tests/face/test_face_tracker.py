"""FaceTracker (sender) and the one-euro smoother."""

import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.face.prepare import read_png
from nerfvc.face.smoothing import FeatureSmoother, OneEuroFilter
from nerfvc.face.tracker import FaceTracker
from nerfvc.features import load_features


def test_tracker_reproduces_dataset_features(small_dataset):
    feats = load_features(small_dataset / "features.npz")
    frames = [read_png(small_dataset / f"frames/{i:06d}.png") for i in range(12)]
    with FaceTracker.from_dir(small_dataset) as tr:  # follows the dataset: raw fits, no smoothing
        assert tr.smoothing is False
        out = [tr.track(f, t) for f, t in zip(frames, feats["timestamps"])]
    assert all(o.ok for o in out)
    assert (
        out[0].expression.shape == (79,) and out[0].pose.shape == (12,) and out[0].landmarks.shape == (478, 3)
    )
    pose = np.array([o.pose for o in out])
    np.testing.assert_allclose(pose, feats["pose"][:12], atol=2e-3)
    lm = np.array([o.landmarks for o in out])
    assert np.abs(lm[..., :2] - feats["landmarks"][:12, :, :2]).max() < 1.0


def test_tracker_other_size_and_lost_face(small_dataset):
    import cv2

    feats = load_features(small_dataset / "features.npz")
    frame = read_png(small_dataset / "frames/000000.png")
    with FaceTracker.from_dir(small_dataset, smoothing=True) as tr:
        small = tr.track(cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA), 0.0)
        assert small.ok
        # scaled camera: the same head at the same place in space (cm accuracy at half resolution)
        np.testing.assert_allclose(small.pose[9:], feats["pose"][0, 9:], atol=0.02)
        lost = tr.track(np.zeros((256, 256, 3), np.uint8), 0.04)
        assert not lost.ok
        np.testing.assert_array_equal(lost.pose, small.pose)  # last good values
    with pytest.raises(InputError):
        FaceTracker.from_dir(small_dataset / "nope")


def test_tracker_crops_raw_non_square_frames_like_the_dataset(small_dataset):
    from face_testdata import D9

    from nerfvc.io import read_frames

    feats = load_features(small_dataset / "features.npz")
    with FaceTracker.from_dir(small_dataset, smoothing=False) as tr:
        out = [tr.track(f, t) for f, t in read_frames(D9, max_frames=10)]  # raw 512x480 frames
    assert all(o.ok for o in out)
    pose = np.array([o.pose for o in out])
    # same head pose as the dataset (tracked on the 480² crop resized to 512²): mm-level translation
    np.testing.assert_allclose(pose[:, 9:], feats["pose"][:10, 9:], atol=0.01)
    np.testing.assert_allclose(pose[:, :9], feats["pose"][:10, :9], atol=0.03)


def test_one_euro_removes_jitter_with_little_lag():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    truth = np.where(t < 5, 0.0, 2.0 * (t - 5))[:, None]  # still, then a fast ramp
    noisy = truth + rng.normal(scale=0.05, size=truth.shape)
    f = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    out = np.array([f(x, ti) for x, ti in zip(noisy, t)])
    still = slice(30, 150)
    assert np.std(out[still]) < 0.5 * np.std(noisy[still])  # over half the jitter removed when still
    ramp = slice(200, 300)
    assert np.abs(out[ramp] - truth[ramp]).mean() < 0.15  # < ~2 frames of lag at 2 units/s


def test_feature_smoother_keeps_rotations_proper():
    rng = np.random.default_rng(1)
    sm = FeatureSmoother()
    for k in range(20):
        q, _ = np.linalg.qr(np.eye(3) + 0.05 * rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        pose = np.concatenate([q.reshape(9), [0, 0, 0.6]])
        e, p = sm(rng.normal(scale=1e-3, size=79), pose, k / 30)
        r = p[:9].reshape(3, 3).astype(np.float64)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
        assert e.shape == (79,)
