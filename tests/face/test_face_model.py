"""Morphable model: landmarks on every frame, PCA variance, reprojection, pose conventions, save/load."""

import numpy as np
import pytest
from face_testdata import AOC, D9, track_clip

from nerfvc.face.mesh import STABLE
from nerfvc.face.model import FaceModel, generalized_procrustes, lift, rigid_align
from nerfvc.features import pose_to_rt


@pytest.mark.parametrize("clip", [D9, AOC])
def test_landmarks_on_every_frame(clip):
    frames, faces = track_clip(clip, 30)
    assert len(frames) == 30
    assert [len(f) for f in faces] == [1] * 30
    for (lm,), img in zip(faces, frames):
        assert lm.shape == (478, 3)
        # inside the frame and spanning a face-sized region
        assert (lm[:, :2] > 0).all() and (lm[:, :2] < img.shape[0]).all()
        assert 100 < np.ptp(lm[:, 1]) < 450


def test_lift_projects_exactly_and_keeps_metric_size(german_track, camera512):
    lms = np.array([f[0] for f in german_track[1]])
    pts = lift(lms, camera512, 0.06)
    np.testing.assert_allclose(camera512.project(pts), lms[..., :2], atol=1e-6)
    # the same face twice as far away (half the size around the principal point) → twice the depth, same shape
    far = lms.copy()
    far[..., :2] = (far[..., :2] - 256) / 2 + 256
    far[..., 2] /= 2
    pts_far = lift(far, camera512, 0.06)
    # the stable landmarks' centroid is exactly twice as deep; the shape itself keeps its metric size
    np.testing.assert_allclose(pts_far[..., STABLE, 2].mean(-1), 2 * pts[..., STABLE, 2].mean(-1), rtol=1e-6)
    c, cf = pts - pts.mean(-2, keepdims=True), pts_far - pts_far.mean(-2, keepdims=True)
    rms, rms_far = np.sqrt((c**2).sum(-1).mean(-1)), np.sqrt((cf**2).sum(-1).mean(-1))
    np.testing.assert_allclose(rms_far, rms, rtol=0.02)  # (not exact: perspective differs with distance)


def test_pca_explains_aligned_variance_and_reprojects(german_track, camera512):
    lms = np.array([f[0] for f in german_track[1]])  # (160, 478, 3)
    train, test = lms[:128], lms[128:]
    model = FaceModel.build(train, camera512, expr_dims=79)
    assert model.expr_dims == 79 and model.basis.shape == (1434, 79)
    np.testing.assert_allclose(model.basis.T @ model.basis, np.eye(79), atol=1e-8)
    assert model.explained_variance_ratio > 0.995
    # a tiny basis explains clearly less: the criterion can fail
    assert FaceModel.build(train, camera512, expr_dims=2).explained_variance_ratio < 0.95
    for subset, limit in ((train, 1.0), (test, 1.0)):
        expr, pose = model.fit(subset, camera512)
        uv = model.project(expr, pose, camera512)
        err = np.linalg.norm(uv - subset[..., :2], axis=-1).mean()
        assert err < limit, err
    # held-out frames: most of their aligned residual variance is still explained
    pts = lift(test, camera512, model.radius_m)
    expr, pose = model.fit(test, camera512)
    r, t = pose_to_rt(pose.astype(np.float64))
    res = (np.einsum("nji,npj->npi", r, pts - t[:, None]) - model.mean).reshape(len(test), -1)
    recon = expr.astype(np.float64) @ model.basis.T
    total = ((res - res.mean(0)) ** 2).sum()
    assert 1 - ((res - recon) ** 2).sum() / total > 0.98


def test_pose_is_proper_rotation_and_frontal_is_identity_like(german_track, camera512):
    lms = np.array([f[0] for f in german_track[1]])
    model = FaceModel.build(lms, camera512)
    _, pose = model.fit(lms, camera512)
    r, t = pose_to_rt(pose.astype(np.float64))
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
    np.testing.assert_allclose(r @ r.swapaxes(1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    # the anchor faces the camera: small rotation from identity (< 25°), plausible depth (metres)
    angle = np.degrees(np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 25
    assert 0.3 < t[:, 2].mean() < 1.5
    # canonical space is centred, metric: face mesh ≈ 12-20 cm wide
    np.testing.assert_allclose(model.mean.mean(0), 0, atol=1e-9)
    assert 0.12 < np.ptp(model.mean[:, 0]) < 0.2


def test_rigid_align_recovers_rotation_without_reflection():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(478, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    dst = src @ q.T + [0.1, -0.2, 2.0]
    r, t = rigid_align(src, dst, np.ones(478))
    np.testing.assert_allclose(r, q, atol=1e-9)
    np.testing.assert_allclose(t, [0.1, -0.2, 2.0], atol=1e-9)
    # a mirrored target still gets a proper rotation
    r2, _ = rigid_align(src, src * [-1, 1, 1], np.ones(478))
    assert np.linalg.det(r2) == pytest.approx(1.0)
    # GPA of rigidly moved copies: the mean reproduces every copy exactly
    rots = [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(4)]
    rots = [q * np.sign(np.linalg.det(q)) for q in rots]
    shapes = np.stack([src @ q.T + rng.normal(size=3) for q in rots])
    mean, rs, ts = generalized_procrustes(shapes)
    np.testing.assert_allclose(np.einsum("nij,pj->npi", rs, mean) + ts[:, None], shapes, atol=1e-9)


def test_save_load_roundtrip_and_head_bounds(german_track, camera512, tmp_path):
    lms = np.array([f[0] for f in german_track[1][:60]])
    model = FaceModel.build(lms, camera512)
    model.head_bounds = model.default_head_bounds()
    lo, hi = model.head_bounds
    # generous: the box holds the face mesh with margins on every side (hair, neck, back of head)
    assert (lo < model.mean.min(0) - 0.02).all() and (hi > model.mean.max(0) + 0.02).all()
    assert hi[2] - lo[2] > 0.2 and hi[0] - lo[0] > 0.2
    model.save(tmp_path)
    back = FaceModel.load(tmp_path)
    e1, p1 = model.fit(lms, camera512)
    e2, p2 = back.fit(lms, camera512)
    np.testing.assert_allclose(e2, e1, atol=2e-6)
    np.testing.assert_allclose(p2, p1, atol=2e-6)
    np.testing.assert_allclose(back.head_bounds, model.head_bounds, atol=1e-6)
    assert back.smoothing is None  # raw fits unless the dataset was smoothed


def test_feature_smoothing_is_saved_with_the_model_and_checked(german_track, camera512, tmp_path):
    import json

    from nerfvc.errors import InputError
    from nerfvc.face.smoothing import SmoothingParams

    lms = np.array([f[0] for f in german_track[1][:20]])
    model = FaceModel.build(lms, camera512, expr_dims=4)
    model.smoothing = SmoothingParams(rot_beta=3.0)
    model.save(tmp_path)
    assert FaceModel.load(tmp_path).smoothing == SmoothingParams(rot_beta=3.0)
    meta = json.loads((tmp_path / "face_model.json").read_text())
    meta.pop("feature_smoothing")  # a model written before the smoothing was recorded: raw fits
    (tmp_path / "face_model.json").write_text(json.dumps(meta))
    assert FaceModel.load(tmp_path).smoothing is None
    meta["feature_smoothing"] = {"rot_beta": 1.0, "wobble": 2.0}
    (tmp_path / "face_model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="feature_smoothing"):
        FaceModel.load(tmp_path)


def test_a_face_model_without_its_arrays_is_refused_by_name(tmp_path):
    """A face model that holds only the head box (as the synthetic datasets write) is refused with an
    InputError naming what it lacks, not a KeyError."""
    from nerfvc.errors import InputError
    from nerfvc.train.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds", num_frames=4, size=16)
    with pytest.raises(InputError, match="lacks mean, basis, weights, explained_variance"):
        FaceModel.load(root)
